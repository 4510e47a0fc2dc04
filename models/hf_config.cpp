#include "models/hf_config.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"

namespace grpo {
namespace {

using nlohmann::json;

// Reads config.json fields with errors that name the file and key.
class ConfigReader {
 public:
  ConfigReader(const json& root, std::string source) : root_(root), source_(std::move(source)) {}

  template <class T>
  T get(const char* key, std::optional<T> fallback = std::nullopt) {
    const auto it = root_.find(key);
    if (it == root_.end() || it->is_null()) {
      if (fallback) return *fallback;
      fail(fmt::format("missing required key '{}'", key));
      return T{};
    }
    try {
      return it->get<T>();
    } catch (const json::exception&) {
      fail(fmt::format("key '{}' has the wrong type (got {})", key, it->dump()));
      return T{};
    }
  }

  const json* find(const char* key) const {
    const auto it = root_.find(key);
    return it == root_.end() || it->is_null() ? nullptr : &*it;
  }

  void fail(const std::string& message) {
    if (error_.empty()) error_ = fmt::format("{}: {}", source_, message);
  }
  const std::string& error() const { return error_; }

 private:
  const json& root_;
  std::string source_;
  std::string error_;
};

}  // namespace

StatusOr<DecoderOptions> parse_decoder_config(const std::string& json_text, const std::string& source) {
  json root;
  try {
    root = json::parse(json_text);
  } catch (const json::exception& e) {
    return Status::error(fmt::format("{}: invalid JSON: {}", source, e.what()));
  }
  if (!root.is_object()) return Status::error(fmt::format("{}: expected a JSON object", source));
  ConfigReader r(root, source);
  DecoderOptions o;

  const std::string model_type = r.get<std::string>("model_type");
  if (model_type == "qwen2") {
    o.architecture = DecoderArchitecture::kQwen2;
  } else if (model_type == "llama") {
    o.architecture = DecoderArchitecture::kLlama;
  } else if (r.error().empty()) {
    return Status::error(fmt::format("{}: model_type '{}' is not supported (supported: qwen2, llama)", source, model_type));
  }
  o.vocab_size = r.get<int64_t>("vocab_size");
  o.hidden_size = r.get<int64_t>("hidden_size");
  o.intermediate_size = r.get<int64_t>("intermediate_size");
  o.num_layers = r.get<int64_t>("num_hidden_layers");
  o.num_heads = r.get<int64_t>("num_attention_heads");
  o.num_kv_heads = r.get<int64_t>("num_key_value_heads", o.num_heads);
  o.rms_norm_eps = r.get<double>("rms_norm_eps", 1e-6);
  o.rope_theta = r.get<double>("rope_theta", 10000.0);
  o.tie_word_embeddings = r.get<bool>("tie_word_embeddings", false);
  o.max_position_embeddings = r.get<int64_t>("max_position_embeddings", 2048);
  o.torch_dtype = r.get<std::string>("torch_dtype", std::string("float32"));
  if (!r.error().empty()) return Status::error(r.error());

  if (o.num_heads <= 0 || o.hidden_size <= 0 || o.num_kv_heads <= 0 || o.num_layers <= 0 || o.vocab_size <= 0)
    return Status::error(fmt::format("{}: sizes must be positive", source));
  o.head_dim = r.get<int64_t>("head_dim", o.hidden_size / o.num_heads);
  if (o.num_heads % o.num_kv_heads != 0)
    return Status::error(fmt::format("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", source,
                                     o.num_heads, o.num_kv_heads));
  if (o.head_dim % 2 != 0) return Status::error(fmt::format("{}: head_dim {} must be even for RoPE", source, o.head_dim));
  if (o.torch_dtype != "float32" && o.torch_dtype != "bfloat16" && o.torch_dtype != "float16")
    return Status::error(fmt::format("{}: torch_dtype '{}' is not supported (float32, bfloat16, float16)", source,
                                     o.torch_dtype));

  const std::string act = r.get<std::string>("hidden_act", std::string("silu"));
  if (act != "silu") return Status::error(fmt::format("{}: hidden_act '{}' is not supported (silu)", source, act));

  if (o.architecture == DecoderArchitecture::kQwen2) {
    o.qkv_bias = true;
    if (r.get<bool>("use_sliding_window", false))
      return Status::error(fmt::format("{}: use_sliding_window true is not supported", source));
  } else {
    const bool attention_bias = r.get<bool>("attention_bias", false);
    o.qkv_bias = attention_bias;
    o.o_bias = attention_bias;
    o.mlp_bias = r.get<bool>("mlp_bias", false);
    const int64_t tp = r.get<int64_t>("pretraining_tp", 1);
    if (tp != 1) return Status::error(fmt::format("{}: pretraining_tp {} is not supported (1)", source, tp));
  }

  if (const json* scaling = r.find("rope_scaling")) {
    const std::string type = scaling->value("rope_type", scaling->value("type", std::string("default")));
    if (type == "llama3") {
      Llama3RopeScaling s;
      s.factor = scaling->value("factor", s.factor);
      s.low_freq_factor = scaling->value("low_freq_factor", s.low_freq_factor);
      s.high_freq_factor = scaling->value("high_freq_factor", s.high_freq_factor);
      s.original_max_position_embeddings =
          scaling->value("original_max_position_embeddings", s.original_max_position_embeddings);
      o.rope_scaling = s;
    } else if (type != "default") {
      return Status::error(fmt::format("{}: rope_scaling type '{}' is not supported (llama3, or null)", source, type));
    }
  }

  if (const json* bos = r.find("bos_token_id"); bos && bos->is_number_integer()) o.bos_token_id = bos->get<int64_t>();
  if (const json* eos = r.find("eos_token_id")) {
    if (eos->is_number_integer()) o.eos_token_ids.push_back(eos->get<int64_t>());
    if (eos->is_array())
      for (const auto& id : *eos) o.eos_token_ids.push_back(id.get<int64_t>());
  }
  if (!r.error().empty()) return Status::error(r.error());
  return o;
}

StatusOr<DecoderOptions> load_decoder_config(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  StatusOr<std::string> text = read_file(path);
  if (!text) return text.status();
  return parse_decoder_config(*text, path);
}

std::string decoder_config_json(const DecoderOptions& o) {
  json j;
  const bool qwen = o.architecture == DecoderArchitecture::kQwen2;
  j["architectures"] = {qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = qwen ? "qwen2" : "llama";
  j["vocab_size"] = o.vocab_size;
  j["hidden_size"] = o.hidden_size;
  j["intermediate_size"] = o.intermediate_size;
  j["num_hidden_layers"] = o.num_layers;
  j["num_attention_heads"] = o.num_heads;
  j["num_key_value_heads"] = o.num_kv_heads;
  j["head_dim"] = o.head_dim;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = o.rms_norm_eps;
  j["rope_theta"] = o.rope_theta;
  j["tie_word_embeddings"] = o.tie_word_embeddings;
  j["max_position_embeddings"] = o.max_position_embeddings;
  j["torch_dtype"] = o.torch_dtype;
  if (qwen) {
    j["use_sliding_window"] = false;
    j["sliding_window"] = nullptr;
  } else {
    j["attention_bias"] = o.qkv_bias;
    j["mlp_bias"] = o.mlp_bias;
  }
  if (o.rope_scaling) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", o.rope_scaling->factor},
                         {"low_freq_factor", o.rope_scaling->low_freq_factor},
                         {"high_freq_factor", o.rope_scaling->high_freq_factor},
                         {"original_max_position_embeddings", o.rope_scaling->original_max_position_embeddings}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  if (o.bos_token_id) j["bos_token_id"] = *o.bos_token_id;
  if (o.eos_token_ids.size() == 1) j["eos_token_id"] = o.eos_token_ids[0];
  if (o.eos_token_ids.size() > 1) j["eos_token_id"] = o.eos_token_ids;
  return j.dump(2) + "\n";
}

}  // namespace grpo
