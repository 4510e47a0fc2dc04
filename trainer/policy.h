#pragma once
// The model being trained with its tokenizer and prompt template, loaded from model.* config:
// a Hugging Face directory, or `builtin:demo-qwen2` (a tiny randomly initialized Qwen2 with a
// byte-level tokenizer, for the CPU demo and tests). `builtin:demo-llama` is the same shape as a
// Llama (no attention biases); either takes `?layers=2&hidden=64&intermediate=168&heads=2&kv_heads=1`
// (any of them) for a model of another size, e.g. a distillation student.

#include <optional>
#include <string>
#include <vector>

#include "core/config.h"
#include "models/chat_template.h"
#include "models/decoder.h"
#include "models/tokenizer.h"
#include "rollout/engine.h"

namespace grpo {

struct Policy {
  Decoder model{nullptr};
  std::optional<Tokenizer> tokenizer;
  std::optional<ChatTemplate> chat;       // unset: prompts are encoded as written
  std::string tokenizer_json;             // written next to exported weights
  std::string tokenizer_config_json;
  std::vector<int64_t> stop_token_ids;    // EOS ids of the tokenizer and config
  int64_t pad_id = 0;
  // Loaded with deferred parameters (load_policy's `deferred`): the model's parameters are empty
  // placeholders and these are its weights, zero-copy views of the memory-mapped safetensors, for
  // a sharded loader to take its slices from (trainer/fsdp.h: slices_of). Empty otherwise.
  TensorMap mapped_weights;
};

// With `deferred`, a Hugging Face model is not materialized: see Policy::mapped_weights. (The
// builtin demo model is tiny and always built whole.)
StatusOr<Policy> load_policy(const ModelConfig& config, uint64_t seed, bool deferred = false);

// Where model.device puts this rank's model: "cpu", or "cuda:K" with K its local rank modulo the
// visible GPUs; an error naming model.device when LibTorch has no CUDA or no GPU is visible.
StatusOr<std::string> placement(DeviceKind kind);

// The generation options of rollout.* for `policy` (its stop tokens and pad id), `group_size`
// samples per prompt: one builder for training, evaluation and every other sampler.
GenerationOptions generation_options(const RolloutConfig& rollout, const Policy& policy, int64_t group_size);

// Prompt token ids: the chat template's rendering of one user message, or the text as written.
std::vector<int64_t> encode_prompt(const Policy& policy, const std::string& prompt);

// Writes a Hugging Face directory (config.json, model.safetensors, tokenizer files) that
// load_policy and `grpo generate` read back.
Status export_policy(Policy& policy, const std::string& dir);
// Only the tokenizer files of export_policy (for exporters that write the weights themselves).
Status export_tokenizer(const Policy& policy, const std::string& dir);

// log pi(completion token | everything before it) [N, C] for left-padded prompts followed by
// right-padded completions, at `temperature`; optionally the policy's entropy at those tokens.
// Both are 0 where completion_mask is false. Memory for the head is O(chunk * V), not O(N * C * V).
at::Tensor completion_logprobs(Decoder& model, const at::Tensor& prompt_ids, const at::Tensor& prompt_mask,
                               const at::Tensor& completion_ids, const at::Tensor& completion_mask, double temperature,
                               at::Tensor* entropy = nullptr);

// Left-pads prompts and right-pads completions into the layout completion_logprobs takes.
struct PaddedBatch {
  at::Tensor prompt_ids, prompt_mask, completion_ids, completion_mask;
};
PaddedBatch pad_batch(const std::vector<std::vector<int64_t>>& prompts,
                      const std::vector<std::vector<int64_t>>& completions, int64_t pad_id);

}  // namespace grpo
