#include "models/sequence_classifier.h"

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "models/safetensors.h"

namespace grpo {

StatusOr<SequenceClassifierOptions> parse_sequence_classifier_config(const std::string& json_text,
                                                                     const std::string& source) {
  StatusOr<DecoderOptions> decoder = parse_decoder_config(json_text, source);
  if (!decoder) return decoder.status();
  const nlohmann::json root = nlohmann::json::parse(json_text);  // parse_decoder_config has validated it
  const auto architectures = root.value("architectures", nlohmann::json::array());
  const bool is_classifier =
      architectures.is_array() && architectures.size() == 1 && architectures[0].is_string() &&
      (architectures[0] == "Qwen2ForSequenceClassification" || architectures[0] == "LlamaForSequenceClassification");
  if (!is_classifier)
    return Status::error(fmt::format("{}: architectures is {}, expected [\"Qwen2ForSequenceClassification\"] or "
                                     "[\"LlamaForSequenceClassification\"]",
                                     source, architectures.dump()));
  SequenceClassifierOptions options;
  options.decoder = *decoder;
  // The head is `score`; no lm_head parameter may exist, and a tied decoder registers none.
  options.decoder.tie_word_embeddings = true;
  if (root.contains("num_labels")) {
    if (!root["num_labels"].is_number_integer() || root["num_labels"].get<int64_t>() < 1)
      return Status::error(fmt::format("{}: num_labels must be a positive integer, got {}", source,
                                       root["num_labels"].dump()));
    options.num_labels = root["num_labels"].get<int64_t>();
  } else if (root.contains("id2label")) {
    if (!root["id2label"].is_object() || root["id2label"].empty())
      return Status::error(fmt::format("{}: id2label must be a non-empty mapping, got {}", source,
                                       root["id2label"].dump()));
    options.num_labels = static_cast<int64_t>(root["id2label"].size());
  }
  if (root.contains("pad_token_id") && !root["pad_token_id"].is_null()) {
    if (!root["pad_token_id"].is_number_integer())
      return Status::error(fmt::format("{}: pad_token_id must be an integer or null, got {}", source,
                                       root["pad_token_id"].dump()));
    options.pad_token_id = root["pad_token_id"].get<int64_t>();
  }
  return options;
}

at::Tensor pooled_positions(const at::Tensor& input_ids, std::optional<int64_t> pad_token_id,
                            const at::Tensor& attention_mask) {
  const int64_t length = input_ids.size(1);
  if (!pad_token_id) {
    if (!attention_mask.defined()) return at::full({input_ids.size(0)}, length - 1, input_ids.options().dtype(at::kLong));
    return (attention_mask.to(at::kLong).sum(1) - 1).clamp_min(0);
  }
  // argmax of a bool row is its first true, or 0 when there is none: then (0 - 1) mod T = T - 1.
  const at::Tensor first_pad = input_ids.eq(*pad_token_id).to(at::kInt).argmax(1);
  return at::remainder(first_pad - 1, length).to(at::kLong);
}

StatusOr<SequenceClassifier> SequenceClassifier::load(const std::string& dir, const std::string& dtype,
                                                      const std::string& device) {
  const std::string config_path = dir + "/config.json";
  std::ifstream in(config_path);
  if (!in) return Status::error(fmt::format("{}: cannot read", config_path));
  std::stringstream text;
  text << in.rdbuf();
  StatusOr<SequenceClassifierOptions> options = parse_sequence_classifier_config(text.str(), config_path);
  if (!options) return options.status();
  StatusOr<TensorMap> tensors = read_safetensors_dir(dir);
  if (!tensors) return tensors.status();

  const std::string chosen = dtype.empty() ? options->decoder.torch_dtype : dtype;
  at::ScalarType type;
  if (chosen == "float32") type = at::kFloat;
  else if (chosen == "bfloat16") type = at::kBFloat16;
  else if (chosen == "float16") type = at::kHalf;
  else return Status::error(fmt::format("dtype '{}' is not supported (float32, bfloat16, float16)", chosen));

  const auto score = tensors->find("score.weight");
  if (score == tensors->end()) return Status::error(fmt::format("{}: checkpoint is missing tensor 'score.weight'", dir));
  const std::vector<int64_t> want{options->num_labels, options->decoder.hidden_size};
  if (score->second.sizes() != at::IntArrayRef(want))
    return Status::error(fmt::format("{}: tensor 'score.weight' has shape {}, config.json needs {}", dir,
                                     fmt::join(score->second.sizes(), "x"), fmt::join(want, "x")));
  const at::Tensor score_weight = score->second.to(torch::Device(device), type).contiguous();
  tensors->erase(score);
  tensors->erase("lm_head.weight");

  Decoder decoder(options->decoder);
  decoder->to(torch::Device(device), type);
  Status status = load_weights(decoder, *tensors);
  if (!status.is_ok()) return Status::error(fmt::format("{}: {}", dir, status.message()));
  decoder->eval();
  return SequenceClassifier(*options, decoder, score_weight);
}

at::Tensor SequenceClassifier::head(const at::Tensor& hidden) const { return at::linear(hidden, score_weight_); }

ClassifierOutput SequenceClassifier::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  torch::NoGradGuard no_grad;
  const auto device = score_weight_.device();
  const at::Tensor ids = input_ids.to(device);
  const at::Tensor mask = attention_mask.defined() ? attention_mask.to(device) : at::Tensor();
  const at::Tensor hidden = decoder_->hidden(ids, mask);  // [B, T, hidden]
  const at::Tensor index = pooled_positions(ids, options_.pad_token_id, mask);
  const at::Tensor rows = at::arange(ids.size(0), index.options());
  const at::Tensor pooled = hidden.index({rows, index});  // [B, hidden]
  ClassifierOutput out;
  out.scores = head(pooled).to(at::kCPU, at::kFloat);
  out.pooled_hidden = pooled.to(at::kCPU, at::kFloat);
  out.pooled_index = index.to(at::kCPU);
  return out;
}

at::Tensor SequenceClassifier::all_position_scores(const at::Tensor& input_ids) {
  torch::NoGradGuard no_grad;
  return head(decoder_->hidden(input_ids.to(score_weight_.device()))).to(at::kCPU, at::kFloat);
}

ClassifierOutput SequenceClassifier::score_rows(const std::vector<std::vector<int64_t>>& rows) {
  size_t length = 1;
  for (const auto& row : rows) length = std::max(length, row.size());
  const int64_t pad = options_.pad_token_id.value_or(0);
  at::Tensor ids = at::full({static_cast<int64_t>(rows.size()), static_cast<int64_t>(length)}, pad, at::kLong);
  at::Tensor mask = at::zeros_like(ids);
  for (size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].empty()) continue;
    const int64_t n = static_cast<int64_t>(rows[r].size());
    ids[r].narrow(0, 0, n).copy_(at::tensor(rows[r], at::kLong));
    mask[r].narrow(0, 0, n).fill_(1);
  }
  return forward(ids, mask);
}

}  // namespace grpo
