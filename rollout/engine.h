#pragma once
// Batched autoregressive generation: G samples per prompt reading one shared copy of the prompt's
// prefill, a KV cache sized once to the prompt + max_new_tokens, stop tokens checked on the device
// and read back every few steps, continuous batching over many prompts, and one RolloutBatch out.

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "models/decoder.h"
#include "models/tokenizer.h"
#include "rollout/sampler.h"

namespace grpo {

enum class FinishReason { kStopToken, kStopString, kLength };
const char* finish_reason_name(FinishReason reason);

// The contract between rollout and trainer. N = prompts * group_size rows; the group_size
// samples of prompt p are rows p*G .. p*G+G-1.
struct RolloutBatch {
  at::Tensor prompt_ids;       // [N, P] long, left-padded with pad_id
  at::Tensor prompt_mask;      // [N, P] bool, true at real prompt tokens
  at::Tensor completion_ids;   // [N, C] long, right-padded with pad_id; C = longest completion
  at::Tensor completion_mask;  // [N, C] bool, true at generated tokens (a stop token included)
  at::Tensor sampling_logp;    // [N, C] float32: log_softmax(logits / temperature) of each token; 0 at padding
  std::vector<FinishReason> finish_reasons;  // [N]
  std::vector<int64_t> prompt_index;         // [N]: which prompt each row answers
  int64_t group_size = 1;
  // The version of the weights that sampled the batch (optimizer steps they had taken), set by
  // RolloutEngine and the trainer; -1 when unknown (the plain generate()).
  int64_t policy_version = -1;
};

struct GenerationOptions {
  SamplingOptions sampling;
  int64_t max_new_tokens = 256;
  int64_t group_size = 1;                  // samples per prompt
  std::vector<int64_t> stop_token_ids;     // e.g. the tokenizer's EOS; the stop token is kept
  std::vector<std::string> stop_strings;   // need a tokenizer; the token completing one is kept
  int64_t pad_id = 0;
  // Prompts decoded at once (each with its G rows); 0 = all. When fewer than the prompts, a prompt
  // whose rows have all finished hands its slot to the next waiting prompt (continuous batching).
  int64_t max_concurrent_prompts = 0;
  // Decode steps between reads of the device state (finished rows, stop strings, free slots).
  // Larger values wait on the device less often and waste up to this many steps per finished row.
  int64_t readback_interval = 8;
};

// Samples `group_size` completions of every prompt. seeds[row] keys row's random draws, so a
// row's tokens do not depend on the rest of the batch. `tokenizer` is needed only for stop strings.
RolloutBatch generate(Decoder& model, const std::vector<std::vector<int64_t>>& prompts,
                      const GenerationOptions& options, const std::vector<uint64_t>& seeds,
                      const Tokenizer* tokenizer = nullptr);

// Generation with weights of its own and the version they hold (DESIGN.md, "Disaggregated and
// async"): a rollout rank loads each new policy into it, and every batch it samples names the
// version that sampled it, so that the trainer can bound and measure the lag.
class RolloutEngine {
 public:
  // Generates with `model` (inference only: no parameter is trained through the engine), whose
  // weights are version `version`.
  RolloutEngine(Decoder model, int64_t version);

  // Copies `tensors` (one per parameter of the model, in named_parameters() order, same shapes;
  // any dtype and device) into the weights, which become version `version`.
  void load_weights(int64_t version, const std::vector<at::Tensor>& tensors);
  int64_t version() const { return version_; }
  Decoder& model() { return model_; }

  // generate() with the engine's weights; the batch carries version().
  RolloutBatch generate(const std::vector<std::vector<int64_t>>& prompts, const GenerationOptions& options,
                        const std::vector<uint64_t>& seeds, const Tokenizer* tokenizer = nullptr);

 private:
  Decoder model_;
  int64_t version_;
};

// One checksum per decoder unit (models/decoder.h: root, then each layer) of `params`, the
// model's parameters in named_parameters() order (the model's own, or whole copies such as a
// stage-3 gather): sum over the unit's elements of value * (1 + index mod 7), in float64, so that
// equal weights give equal sums and a moved or changed element almost surely does not.
std::vector<double> unit_checksums(Decoder& model, const std::vector<at::Tensor>& params);

// Row `row`'s generated tokens (a stop token included), without the padding.
std::vector<int64_t> completion_tokens(const RolloutBatch& batch, int64_t row);

// seeds for every row of a batch: a function of (base_seed, prompt position, sample), so that the
// same prompt and sample draw the same numbers wherever they sit.
std::vector<uint64_t> rollout_seeds(uint64_t base_seed, const std::vector<uint64_t>& prompt_keys, int64_t group_size);

}  // namespace grpo
