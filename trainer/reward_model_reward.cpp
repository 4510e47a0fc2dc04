#include "trainer/reward_model_reward.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>

#include <fmt/format.h>

#include "models/chat_template.h"
#include "models/sequence_classifier.h"
#include "models/tokenizer.h"
#include "rewards/reward.h"

namespace grpo {
namespace {

constexpr const char* kName = "reward_model";

class RewardModelReward : public Reward {
 public:
  RewardModelReward(SequenceClassifier model, Tokenizer tokenizer, std::optional<ChatTemplate> chat,
                    int64_t batch_size, int64_t label, RewardNormalization normalization)
      : model_(std::move(model)),
        tokenizer_(std::move(tokenizer)),
        chat_(std::move(chat)),
        batch_size_(batch_size),
        label_(label),
        normalization_(normalization) {}

  bool scores_batches() const override { return true; }

  RewardScore score(const RewardSample& sample) const override { return score_batch({sample}).front(); }

  std::vector<RewardScore> score_batch(const std::vector<RewardSample>& samples) const override {
    std::vector<std::vector<int64_t>> rows;
    rows.reserve(samples.size());
    for (const RewardSample& sample : samples) {
      try {
        rows.push_back(encode(sample));
      } catch (const std::exception& e) {
        throw std::runtime_error(fmt::format("sample '{}': {}", sample.id, e.what()));
      }
    }
    std::vector<double> raw;
    raw.reserve(samples.size());
    {
      std::lock_guard<std::mutex> lock(mutex_);  // one forward pass at a time on the shared model
      for (size_t begin = 0; begin < rows.size(); begin += static_cast<size_t>(batch_size_)) {
        const size_t end = std::min(rows.size(), begin + static_cast<size_t>(batch_size_));
        const ClassifierOutput out =
            model_.score_rows(std::vector<std::vector<int64_t>>(rows.begin() + begin, rows.begin() + end));
        for (int64_t r = 0; r < out.scores.size(0); ++r) raw.push_back(out.scores[r][label_].item<double>());
      }
    }
    const std::vector<double> normalized = normalize_reward_scores(raw, normalization_);
    std::vector<RewardScore> scores(samples.size());
    for (size_t s = 0; s < samples.size(); ++s) {
      scores[s].score = normalized[s];
      scores[s].components["raw"] = raw[s];
      scores[s].reason = fmt::format("reward model score {:.4f} over {} tokens", raw[s], rows[s].size());
    }
    return scores;
  }

 private:
  std::vector<int64_t> encode(const RewardSample& sample) const {
    std::vector<int64_t> ids;
    if (chat_) {
      ChatOptions whole_conversation;
      whole_conversation.add_generation_prompt = false;
      StatusOr<std::string> text = chat_->render({{"user", sample.prompt}, {"assistant", sample.completion}}, whole_conversation);
      if (!text) throw std::runtime_error(text.status().message());
      ids = tokenizer_.encode(*text);
    } else {
      ids = tokenizer_.encode(sample.prompt + sample.completion, /*add_special_tokens=*/true);
    }
    if (ids.empty()) throw std::runtime_error("prompt and completion encode to no tokens");
    const int64_t limit = model_.options().decoder.max_position_embeddings;
    if (static_cast<int64_t>(ids.size()) > limit)
      throw std::runtime_error(
          fmt::format("{} tokens exceed the reward model's max_position_embeddings {}", ids.size(), limit));
    return ids;
  }

  // score_rows runs the model; the mutex makes concurrent scoring calls take turns.
  mutable SequenceClassifier model_;
  Tokenizer tokenizer_;
  std::optional<ChatTemplate> chat_;
  int64_t batch_size_;
  int64_t label_;
  RewardNormalization normalization_;
  mutable std::mutex mutex_;
};

StatusOr<std::unique_ptr<Reward>> make_reward_model_reward(const nlohmann::json& json) {
  RewardOptions options(kName, json);
  const std::string model_dir = options.string("model", "");
  const std::string tokenizer_dir = options.string("tokenizer", "");
  const std::string chat_template = options.string("chat_template", "auto");
  const std::string device = options.string("device", "cpu");
  const std::string dtype = options.string("dtype", "float32");
  const int64_t batch_size = options.integer("batch_size", 8);
  const int64_t label = options.integer("label", 0);
  const std::string normalize = options.string("normalize", "none");
  if (Status status = options.finish(); !status.is_ok()) return status;
  const auto fail = [](const std::string& message) { return Status::error(fmt::format("reward '{}': {}", kName, message)); };
  if (model_dir.empty()) return fail("option 'model' is required: a *ForSequenceClassification directory");
  if (batch_size < 1) return fail(fmt::format("option 'batch_size' must be at least 1, got {}", batch_size));
  StatusOr<RewardNormalization> normalization = parse_reward_normalization(normalize);
  if (!normalization) return fail(normalization.status().message());

  StatusOr<SequenceClassifier> model = SequenceClassifier::load(model_dir, dtype, device);
  if (!model) return fail(model.status().message());
  if (label < 0 || label >= model->options().num_labels)
    return fail(fmt::format("option 'label' must be in [0, {}) for {}, got {}", model->options().num_labels, model_dir,
                            label));

  const std::string source = tokenizer_dir.empty() ? model_dir : tokenizer_dir;
  StatusOr<Tokenizer> tokenizer = source == "builtin:bytes" ? StatusOr<Tokenizer>(Tokenizer::byte_level())
                                                            : Tokenizer::load(source);
  if (!tokenizer) return fail(fmt::format("tokenizer: {}", tokenizer.status().message()));
  if (tokenizer->vocab_size() > model->options().decoder.vocab_size)
    return fail(fmt::format("the tokenizer of {} has {} tokens, more than the model's vocab_size {}", source,
                            tokenizer->vocab_size(), model->options().decoder.vocab_size));

  std::optional<ChatTemplate> chat;
  if (chat_template == "auto" || chat_template == "tokenizer") {
    // auto: the directory's own template when it has one; "tokenizer" insists on it.
    if (chat_template == "tokenizer" || !tokenizer->chat_template().empty()) {
      StatusOr<ChatTemplate> own = ChatTemplate::from_tokenizer(*tokenizer);
      if (!own) return fail(fmt::format("option 'chat_template': {}", own.status().message()));
      chat = *own;
    }
  } else if (chat_template != "none") {
    StatusOr<ChatTemplate> named = ChatTemplate::named(chat_template, tokenizer->bos_token());
    if (!named) return fail(fmt::format("option 'chat_template': {}", named.status().message()));
    chat = *named;
  }
  return std::unique_ptr<Reward>(new RewardModelReward(std::move(model).value(), std::move(tokenizer).value(),
                                                       std::move(chat), batch_size, label, *normalization));
}

}  // namespace

StatusOr<RewardNormalization> parse_reward_normalization(const std::string& name) {
  if (name == "none") return RewardNormalization::kNone;
  if (name == "zscore") return RewardNormalization::kZScore;
  if (name == "sigmoid") return RewardNormalization::kSigmoid;
  return Status::error(fmt::format("option 'normalize' must be none, zscore or sigmoid, got '{}'", name));
}

std::vector<double> normalize_reward_scores(const std::vector<double>& raw, RewardNormalization normalization) {
  std::vector<double> out(raw);
  if (normalization == RewardNormalization::kSigmoid) {
    for (double& x : out) x = 1.0 / (1.0 + std::exp(-x));
  } else if (normalization == RewardNormalization::kZScore && !raw.empty()) {
    double mean = 0.0;
    for (double x : raw) mean += x;
    mean /= static_cast<double>(raw.size());
    double variance = 0.0;
    for (double x : raw) variance += (x - mean) * (x - mean);
    const double stddev = std::sqrt(variance / static_cast<double>(raw.size()));
    for (double& x : out) x = stddev > 0.0 ? (x - mean) / stddev : 0.0;
  }
  return out;
}

void register_model_rewards() {
  static std::once_flag once;
  std::call_once(once, [] { register_reward(kName, make_reward_model_reward); });
}

}  // namespace grpo
