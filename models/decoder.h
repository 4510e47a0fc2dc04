#pragma once
// A Qwen2/Llama-family decoder (RMSNorm, RoPE with HF's rotate_half convention and llama3
// scaling, grouped-query attention, SwiGLU MLP, optional q/k/v biases, tied or untied head).
// Parameter names equal the Hugging Face checkpoint keys, so loading is a lookup.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "core/status.h"
#include "models/hf_config.h"
#include "models/kv_cache.h"
#include "models/safetensors.h"

namespace grpo {

class TransformerImpl;

// A group of parameters that parallel wrappers (trainer/fsdp.h) gather, shard and recompute
// together. Unit 0 is the root: the embeddings, the final norm and the head (when untied), so a
// tied head stays one tensor; unit i >= 1 is decoder layer i - 1.
struct DecoderUnit {
  std::string name;                      // "root", "model.layers.3"
  std::vector<std::string> param_names;  // the decoder's (Hugging Face) parameter names
  std::vector<at::Tensor> params;        // the registered parameters themselves
  std::vector<std::vector<int64_t>> shapes;  // their full shapes (also while deferred or sharded)
};

// kAllocated: every parameter allocated and randomly initialized (as torch::nn's modules do).
// kDeferred: every parameter is an empty placeholder [0]; only the full shapes are known
// (DecoderUnit::shapes). Nothing of the model's size is allocated; a loader fills the parameters
// (trainer/fsdp fills only its shards) before any forward.
enum class ParameterStorage { kAllocated, kDeferred };

// Runs `body` on `input` on behalf of unit `unit`. The decoder calls every unit through it: the
// root three times per pass (embeddings, final norm, head), each layer once. A wrapper hooks it to
// gather parameters, recompute in backward, etc.; the default runs body(input). A body captures
// what else it reads by value, so that it may run again later (recomputed in backward).
using UnitBody = std::function<at::Tensor(const at::Tensor& input)>;
using UnitCall = std::function<at::Tensor(size_t unit, const at::Tensor& input, const UnitBody& body)>;

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(DecoderOptions options, ParameterStorage storage = ParameterStorage::kAllocated);

  // Logits [B, T, V] in float32. `attention_mask` [B, T] marks real tokens (undefined: all real);
  // positions count real tokens only. With a cache, the tokens are appended to it.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}, KvCache* cache = nullptr);

  // Final normed hidden states [B, T, hidden] (before the head), same arguments as forward. With
  // first_position > 0 (no cache), only positions [first_position, T): [B, T - first_position,
  // hidden], the same values as the full result's slice. The last layer then computes its queries,
  // attention output, MLP and norms for those positions alone (its keys and values, and every
  // earlier layer, still cover all T): what a caller that reads the completion's log-probs needs.
  at::Tensor hidden(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}, KvCache* cache = nullptr,
                    int64_t first_position = 0);
  at::Tensor logits_from_hidden(const at::Tensor& hidden);
  // The head's weight [V, hidden]: lm_head.weight, or the embeddings when tied.
  const at::Tensor& head_weight() const { return lm_head_weight_; }

  // HF's output_hidden_states: the embeddings, each layer's output but the last, then the final
  // norm of the last layer's output: num_layers + 1 tensors [B, T, hidden].
  std::vector<at::Tensor> hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask = {});

  KvCache make_cache(int64_t batch, int64_t capacity) const;
  // The RoPE inverse frequencies [head_dim / 2] (float32), after any scaling.
  const at::Tensor& rope_inv_freq() const { return inv_freq_; }
  const DecoderOptions& options() const { return options_; }
  // Every parameter's full shape by name, also while the parameters are deferred or sharded.
  const std::map<std::string, std::vector<int64_t>>& parameter_shapes() const { return shapes_; }

  // The units, root first, then the layers in order; every parameter is in exactly one.
  std::vector<DecoderUnit> units();
  // Inference (no grad, no unit call-out) through fused projections: q|k|v and gate|up as one
  // product each, and every projection and the head through copies of their weights packed for
  // few-row products (kernels/packed_linear.h), built on first use and rebuilt when the parameters
  // change. On a float32 CPU model the copies cost about the parameters' own memory (the tied head
  // included) while on; off frees them. The rollout engine turns it on for a generate() call.
  void set_fused_inference(bool on);
  bool fused_inference() const { return fused_inference_; }
  // Routes every unit's computation through `call` (an empty function restores the default).
  void set_unit_call(UnitCall call) { unit_call_ = std::move(call); }
  // Runs `body` as unit `unit` through the call-out. Code outside the decoder that reads a unit's
  // parameters (e.g. chunked log-probs reading the head weight) must do so inside such a body, or
  // a sharded model's parameters are empty placeholders there.
  at::Tensor call_unit(size_t unit, const at::Tensor& input, const UnitBody& body);

 private:
  bool fused_path() const;  // fused_inference() and nothing (grad, a wrapper) rules it out
  at::Tensor run(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache, int64_t first_position,
                 std::vector<at::Tensor>* collect);

  DecoderOptions options_;
  std::shared_ptr<TransformerImpl> model_;
  std::shared_ptr<torch::nn::Module> lm_head_;  // registered as "lm_head" only when untied
  at::Tensor lm_head_weight_;                    // [V, hidden]: lm_head.weight, or the embeddings when tied
  at::Tensor inv_freq_;
  UnitCall unit_call_;
  std::map<std::string, std::vector<int64_t>> shapes_;  // every parameter's full shape, by name
  bool fused_inference_ = false;
};
TORCH_MODULE(Decoder);

// Missing, unexpected and mis-shaped tensors (against the decoder's full parameter shapes) are
// errors that name the tensor.
Status check_weights(Decoder& decoder, const TensorMap& tensors);
// Copies a checkpoint's tensors into the decoder's parameters, converting dtype (after check_weights).
Status load_weights(Decoder& decoder, const TensorMap& tensors);

// Builds a decoder from a Hugging Face directory (config.json + model.safetensors or shards).
// `dtype` "float32"/"bfloat16" or "" for the checkpoint's torch_dtype; `device` "cpu"/"cuda".
StatusOr<Decoder> load_decoder(const std::string& dir, const std::string& dtype = "float32",
                               const std::string& device = "cpu");

// A Hugging Face directory read without materializing the model: a deferred decoder (empty
// parameter placeholders in `dtype` on `device`) and its checked weights as zero-copy views of the
// memory-mapped safetensors (single file or sharded index). A sharded loader (trainer/fsdp) copies
// only its slices out of them, so only those pages are ever read.
struct MappedDecoder {
  Decoder model{nullptr};
  TensorMap weights;
};
StatusOr<MappedDecoder> map_decoder(const std::string& dir, const std::string& dtype = "float32",
                                    const std::string& device = "cpu");

// Writes config.json and model.safetensors (no lm_head when tied), atomically per file.
Status save_decoder(Decoder& decoder, const std::string& dir);

}  // namespace grpo
