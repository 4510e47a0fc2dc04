#pragma once
// Small Qwen2-like decoders for tests that compare two paths on the same weights: the options,
// random weights, and a copy of one model's weights into another of any dtype or device.

#include <cstdint>

#include <torch/torch.h>

#include "models/decoder.h"

namespace grpo::testing {

// q/k/v biases and a tied head over 37 tokens; head_dim = hidden / heads.
inline DecoderOptions tiny_qwen2_options(int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads,
                                         int64_t kv_heads) {
  DecoderOptions o;
  o.vocab_size = 37;
  o.hidden_size = hidden;
  o.intermediate_size = intermediate;
  o.num_layers = layers;
  o.num_heads = heads;
  o.num_kv_heads = kv_heads;
  o.head_dim = hidden / heads;
  o.qkv_bias = true;
  o.tie_word_embeddings = true;
  return o;
}

// Every parameter drawn from N(0, std^2).
inline void randomize_parameters(Decoder& model, double std) {
  torch::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0, std);
}

// `to` takes `from`'s parameter values, converted to its own dtype and device.
inline void copy_parameters(Decoder& from, Decoder& to) {
  torch::NoGradGuard no_grad;
  auto source = from->parameters(), target = to->parameters();
  for (size_t i = 0; i < source.size(); ++i) target[i].copy_(source[i]);
}

// Three rows of 29 random token ids: one full, one right-padded (its last 9 slots), one
// left-padded (its first 6). mask [3, 29] long, 1 at real tokens.
struct PaddedBatch {
  at::Tensor ids, mask;
};
inline PaddedBatch padded_batch(int64_t vocab_size) {
  PaddedBatch batch{at::randint(0, vocab_size, {3, 29}, at::kLong), at::ones({3, 29}, at::kLong)};
  batch.mask[1].narrow(0, 20, 9).fill_(0);
  batch.mask[2].narrow(0, 0, 6).fill_(0);
  return batch;
}

}  // namespace grpo::testing
