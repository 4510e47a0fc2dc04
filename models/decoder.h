#pragma once
// A Qwen2/Llama-family decoder (RMSNorm, RoPE with HF's rotate_half convention and llama3
// scaling, grouped-query attention, SwiGLU MLP, optional q/k/v biases, tied or untied head).
// Parameter names equal the Hugging Face checkpoint keys, so loading is a lookup.

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

class DecoderImpl : public torch::nn::Module {
 public:
  explicit DecoderImpl(DecoderOptions options);

  // Logits [B, T, V] in float32. `attention_mask` [B, T] marks real tokens (undefined: all real);
  // positions count real tokens only. With a cache, the tokens are appended to it.
  at::Tensor forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}, KvCache* cache = nullptr);

  // Final normed hidden states [B, T, hidden] (before the head), same arguments as forward.
  at::Tensor hidden(const at::Tensor& input_ids, const at::Tensor& attention_mask = {}, KvCache* cache = nullptr);
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

 private:
  at::Tensor run(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache,
                 std::vector<at::Tensor>* collect);

  DecoderOptions options_;
  std::shared_ptr<TransformerImpl> model_;
  std::shared_ptr<torch::nn::Module> lm_head_;  // registered as "lm_head" only when untied
  at::Tensor lm_head_weight_;                    // [V, hidden]: lm_head.weight, or the embeddings when tied
  at::Tensor inv_freq_;
};
TORCH_MODULE(Decoder);

// Copies a checkpoint's tensors into the decoder's parameters, converting dtype. Missing,
// unexpected and mis-shaped tensors are errors that name the tensor.
Status load_weights(Decoder& decoder, const TensorMap& tensors);

// Builds a decoder from a Hugging Face directory (config.json + model.safetensors or shards).
// `dtype` "float32"/"bfloat16" or "" for the checkpoint's torch_dtype; `device` "cpu"/"cuda".
StatusOr<Decoder> load_decoder(const std::string& dir, const std::string& dtype = "float32",
                               const std::string& device = "cpu");

// Writes config.json and model.safetensors (no lm_head when tied), atomically per file.
Status save_decoder(Decoder& decoder, const std::string& dir);

}  // namespace grpo
