#include "models/decoder.h"

#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <sys/stat.h>

#include <torch/torch.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include "core/atomic_file.h"
#include "kernels/attention.h"
#include "kernels/cpu_kernels.h"
#include "kernels/linear.h"
#include "kernels/packed_linear.h"
#include "kernels/rms_norm.h"
#include "kernels/rotary.h"
#include "kernels/swiglu.h"

namespace grpo {
namespace {

// Creates the decoder's parameters: allocated and initialized, or (deferred) empty placeholders
// whose full shapes it remembers, so that a sharded loader fills only its slices.
class ParameterMaker {
 public:
  explicit ParameterMaker(ParameterStorage storage) : storage_(storage) {}
  at::Tensor operator()(std::vector<int64_t> shape, const std::function<void(at::Tensor&)>& init) {
    at::Tensor p = storage_ == ParameterStorage::kDeferred ? at::empty({0}) : at::empty(shape);
    if (storage_ == ParameterStorage::kAllocated) {
      at::NoGradGuard no_grad;
      init(p);
    }
    shapes_[p.unsafeGetTensorImpl()] = std::move(shape);
    return p;
  }
  const std::vector<int64_t>& shape_of(const at::Tensor& p) const { return shapes_.at(p.unsafeGetTensorImpl()); }

 private:
  ParameterStorage storage_;
  std::map<const c10::TensorImpl*, std::vector<int64_t>> shapes_;
};

// y = w * (x / sqrt(mean(x^2) + eps)), in float32 whatever the activation dtype (as HF).
class RmsNormImpl : public torch::nn::Module {
 public:
  RmsNormImpl(int64_t size, double eps, ParameterMaker& make) : eps_(eps) {
    weight = register_parameter("weight", make({size}, [](at::Tensor& w) { w.fill_(1.0); }));
  }
  at::Tensor forward(const at::Tensor& x) { return rms_norm(x, weight, eps_); }
  at::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RmsNorm);

// y = x W^T + b, initialized as torch::nn::Linear is (same draws in the same order), but built by a
// ParameterMaker so that a deferred decoder allocates nothing.
class LinearImpl : public torch::nn::Module {
 public:
  LinearImpl(int64_t in, int64_t out, bool with_bias, ParameterMaker& make) {
    weight = register_parameter("weight", make({out, in}, [](at::Tensor& w) { torch::nn::init::kaiming_uniform_(w, std::sqrt(5)); }));
    if (with_bias) {
      const double bound = 1.0 / std::sqrt(static_cast<double>(in));
      bias = register_parameter("bias", make({out}, [bound](at::Tensor& b) { torch::nn::init::uniform_(b, -bound, bound); }));
    }
  }
  at::Tensor forward(const at::Tensor& x) { return grpo::linear(x, weight, bias); }
  at::Tensor weight, bias;
};
TORCH_MODULE(Linear);

// Token embeddings, initialized as torch::nn::Embedding is: N(0, 1).
class EmbeddingImpl : public torch::nn::Module {
 public:
  EmbeddingImpl(int64_t count, int64_t dim, ParameterMaker& make) {
    weight = register_parameter("weight", make({count, dim}, [](at::Tensor& w) { torch::nn::init::normal_(w); }));
  }
  at::Tensor forward(const at::Tensor& ids) { return at::embedding(weight, ids); }
  at::Tensor weight;
};
TORCH_MODULE(Embedding);

Linear make_linear(int64_t in, int64_t out, bool bias, ParameterMaker& make) { return Linear(in, out, bias, make); }

// For inference only: linear layers' weights and biases concatenated along the output and packed
// for few-row products (kernels/packed_linear.h), so that one product reads the input once for
// all of them and streams the weights once. Rebuilt when any part is another tensor or was updated
// in place (optimizer step, loading) since it was built; drop() frees it. Where the pack does not
// apply (another device or dtype) a single part is used as it is, without a copy.
class InferenceLinear {
 public:
  at::Tensor operator()(const at::Tensor& x, const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases) {
    if (weights.size() == 1 && !runs_on_cpu_kernels(weights[0])) return at::linear(x, weights[0], biases.empty() ? at::Tensor() : biases[0]);
    std::vector<std::pair<const void*, int64_t>> stamp;
    for (const auto* list : {&weights, &biases})
      for (const at::Tensor& t : *list) stamp.emplace_back(t.data_ptr(), t._version());
    PackedLinear linear;  // a copy shares the packed tensors; the product runs outside the lock
    {
      std::lock_guard<std::mutex> lock(mutex_);  // rows of one step may run on several threads
      if (!linear_.defined() || stamp != stamp_) {
        linear_ = PackedLinear(weights.size() == 1 ? weights[0] : at::cat(weights, 0),
                               biases.size() != weights.size() ? at::Tensor() : biases.size() == 1 ? biases[0] : at::cat(biases, 0));
        stamp_ = std::move(stamp);
      }
      linear = linear_;
    }
    return linear(x);
  }
  at::Tensor operator()(const at::Tensor& x, const std::vector<Linear>& parts) {
    std::vector<at::Tensor> weights, biases;
    for (const auto& part : parts) {
      weights.push_back(part->weight);
      if (part->bias.defined()) biases.push_back(part->bias);
    }
    return (*this)(x, weights, biases);
  }
  void drop() {
    linear_ = PackedLinear();
    stamp_.clear();
  }

 private:
  PackedLinear linear_;
  std::vector<std::pair<const void*, int64_t>> stamp_;
  std::mutex mutex_;
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const DecoderOptions& o, ParameterMaker& make) : o_(o) {
    q_proj = register_module("q_proj", make_linear(o.hidden_size, o.num_heads * o.head_dim, o.qkv_bias, make));
    k_proj = register_module("k_proj", make_linear(o.hidden_size, o.num_kv_heads * o.head_dim, o.qkv_bias, make));
    v_proj = register_module("v_proj", make_linear(o.hidden_size, o.num_kv_heads * o.head_dim, o.qkv_bias, make));
    o_proj = register_module("o_proj", make_linear(o.num_heads * o.head_dim, o.hidden_size, o.o_bias, make));
  }

  // x [B, T, hidden]; cos/sin [B, T, hd]; key_valid [B, S] marks real keys; bias: see KvCache::attend;
  // layer's cache slice or none. Without a cache, queries may start at position `first` (the output
  // is then [B, T - first, hidden]); keys and values cover all T.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& key_valid,
                     const at::Tensor& bias, KvCache* cache, size_t layer, int64_t first = 0) {
    const int64_t b = x.size(0), t = x.size(1), queries = t - first, hd = o_.head_dim, kv = o_.num_kv_heads;
    at::Tensor q = q_proj(x.narrow(1, first, queries)).view({b, queries, o_.num_heads, hd}).transpose(1, 2);
    at::Tensor k = k_proj(x).view({b, t, kv, hd}).transpose(1, 2);  // [B, KV, T, hd]
    at::Tensor v = v_proj(x).view({b, t, kv, hd}).transpose(1, 2);
    q = rotary_embedding(q, cos.narrow(1, first, queries), sin.narrow(1, first, queries));  // [B, H, T - first, hd]
    k = rotary_embedding(k, cos, sin);
    // Causal, blockwise so memory stays linear in length; query head h reads kv head h / (heads / kv_heads).
    const at::Tensor out =
        cache != nullptr ? cache->attend(layer, q, k, v, key_valid, bias) : attention(q, k, v, key_valid, first);
    return o_proj(out.transpose(1, 2).reshape({b, queries, o_.num_heads * hd}));
  }

  // forward for inference with q|k|v as one GEMM and RoPE applied to q and k at once.
  at::Tensor forward_fused(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                           const at::Tensor& key_valid, const at::Tensor& bias, KvCache* cache, size_t layer) {
    const int64_t b = x.size(0), t = x.size(1), hd = o_.head_dim, heads = o_.num_heads, kv = o_.num_kv_heads;
    const at::Tensor qkv = qkv_(x, {q_proj, k_proj, v_proj}).view({b, t, heads + 2 * kv, hd});
    const at::Tensor qk = rotary_embedding(qkv.narrow(2, 0, heads + kv).transpose(1, 2), cos, sin);  // [B, H + KV, T, hd]
    const at::Tensor q = qk.narrow(1, 0, heads), k = qk.narrow(1, heads, kv);
    const at::Tensor v = qkv.narrow(2, heads + kv, kv).transpose(1, 2);
    const at::Tensor out = cache != nullptr ? cache->attend(layer, q, k, v, key_valid, bias) : attention(q, k, v, key_valid, 0);
    return out_(out.transpose(1, 2).reshape({b, t, heads * hd}), {o_proj});
  }
  void drop_fused() {
    qkv_.drop();
    out_.drop();
  }

  Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};

 private:
  DecoderOptions o_;
  InferenceLinear qkv_, out_;
};
TORCH_MODULE(Attention);

class MlpImpl : public torch::nn::Module {
 public:
  MlpImpl(const DecoderOptions& o, ParameterMaker& make) {
    gate_proj = register_module("gate_proj", make_linear(o.hidden_size, o.intermediate_size, o.mlp_bias, make));
    up_proj = register_module("up_proj", make_linear(o.hidden_size, o.intermediate_size, o.mlp_bias, make));
    down_proj = register_module("down_proj", make_linear(o.intermediate_size, o.hidden_size, o.mlp_bias, make));
  }
  at::Tensor forward(const at::Tensor& x) { return down_proj(swiglu(gate_proj(x), up_proj(x))); }
  // forward for inference with gate|up as one GEMM.
  at::Tensor forward_fused(const at::Tensor& x) {
    const at::Tensor gate_up = gate_up_(x, {gate_proj, up_proj});
    const int64_t size = gate_up.size(-1) / 2;
    return down_(swiglu(gate_up.narrow(-1, 0, size), gate_up.narrow(-1, size, size)), {down_proj});
  }
  void drop_fused() {
    gate_up_.drop();
    down_.drop();
  }
  Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};

 private:
  InferenceLinear gate_up_, down_;
};
TORCH_MODULE(Mlp);

class DecoderLayerImpl : public torch::nn::Module {
 public:
  DecoderLayerImpl(const DecoderOptions& o, ParameterMaker& make) {
    self_attn = register_module("self_attn", Attention(o, make));
    mlp = register_module("mlp", Mlp(o, make));
    input_layernorm = register_module("input_layernorm", RmsNorm(o.hidden_size, o.rms_norm_eps, make));
    post_attention_layernorm = register_module("post_attention_layernorm", RmsNorm(o.hidden_size, o.rms_norm_eps, make));
  }
  // h [B, T, hidden] -> [B, T - first, hidden]: positions from `first` on (see Attention::forward).
  at::Tensor forward(at::Tensor h, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& key_valid,
                     const at::Tensor& bias, KvCache* cache, size_t layer, int64_t first = 0) {
    const at::Tensor attended = self_attn->forward(input_layernorm(h), cos, sin, key_valid, bias, cache, layer, first);
    h = h.narrow(1, first, h.size(1) - first) + attended;
    return h + mlp(post_attention_layernorm(h));
  }
  // forward for inference through the fused projections.
  at::Tensor forward_fused(const at::Tensor& h, const at::Tensor& cos, const at::Tensor& sin,
                           const at::Tensor& key_valid, const at::Tensor& bias, KvCache* cache, size_t layer) {
    const at::Tensor mid =
        self_attn->forward_fused(input_layernorm(h), cos, sin, key_valid, bias, cache, layer).add_(h);
    return mlp->forward_fused(post_attention_layernorm(mid)).add_(mid);
  }
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

// RoPE inverse frequencies in float32, as transformers computes them.
at::Tensor compute_inv_freq(const DecoderOptions& o) {
  const at::Tensor exponent = at::arange(0, o.head_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(o.head_dim);
  at::Tensor inv_freq = 1.0 / at::pow(o.rope_theta, exponent);
  if (!o.rope_scaling) return inv_freq;
  const Llama3RopeScaling& s = *o.rope_scaling;
  const double old_context = static_cast<double>(s.original_max_position_embeddings);
  const double low_freq_wavelen = old_context / s.low_freq_factor;
  const double high_freq_wavelen = old_context / s.high_freq_factor;
  const at::Tensor wavelen = 2 * M_PI / inv_freq;
  at::Tensor scaled = at::where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq);
  const at::Tensor smooth = (old_context / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
  const at::Tensor smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled;
  const at::Tensor medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen);
  return at::where(medium, smoothed, scaled);
}

}  // namespace

class TransformerImpl : public torch::nn::Module {
 public:
  TransformerImpl(const DecoderOptions& o, ParameterMaker& make) {
    embed_tokens = register_module("embed_tokens", Embedding(o.vocab_size, o.hidden_size, make));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.num_layers; ++i) {
      decoder_layers.push_back(DecoderLayer(o, make));
      layers->push_back(decoder_layers.back());
    }
    norm = register_module("norm", RmsNorm(o.hidden_size, o.rms_norm_eps, make));
  }
  Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  std::vector<DecoderLayer> decoder_layers;
  RmsNorm norm{nullptr};
  InferenceLinear inference_head;  // the head of the fused path (DecoderImpl::set_fused_inference)
};

DecoderImpl::DecoderImpl(DecoderOptions options, ParameterStorage storage) : options_(std::move(options)) {
  ParameterMaker make(storage);
  model_ = register_module("model", std::make_shared<TransformerImpl>(options_, make));
  if (options_.tie_word_embeddings) {
    lm_head_weight_ = model_->embed_tokens->weight;
  } else {
    auto head = make_linear(options_.hidden_size, options_.vocab_size, false, make);
    lm_head_ = register_module("lm_head", head.ptr());
    lm_head_weight_ = head->weight;
  }
  for (const auto& item : named_parameters(/*recurse=*/true)) shapes_[item.key()] = make.shape_of(item.value());
  inv_freq_ = compute_inv_freq(options_);
}

KvCache DecoderImpl::make_cache(int64_t batch, int64_t capacity) const {
  const auto tensor_options = model_->embed_tokens->weight.options().requires_grad(false);
  KvCache cache;
  for (int64_t i = 0; i < options_.num_layers; ++i) {
    cache.keys.push_back(at::zeros({batch, options_.num_kv_heads, capacity, options_.head_dim}, tensor_options));
    cache.values.push_back(at::zeros({batch, options_.num_kv_heads, capacity, options_.head_dim}, tensor_options));
  }
  cache.key_mask = at::zeros({batch, capacity}, tensor_options.dtype(at::kBool));
  cache.next_position = at::zeros({batch}, tensor_options.dtype(at::kLong));
  return cache;
}

at::Tensor DecoderImpl::run(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache,
                            int64_t first_position, std::vector<at::Tensor>* collect) {
  TORCH_CHECK(input_ids.dim() == 2, "decoder: input_ids must be [B, T], got ", input_ids.sizes());
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  TORCH_CHECK(first_position >= 0 && first_position < std::max<int64_t>(t, 1) && (first_position == 0 || cache == nullptr),
              "decoder: first_position ", first_position, " must lie in [0, ", t, ") and comes without a cache");
  const auto device = input_ids.device();
  const at::Tensor mask = attention_mask.defined() ? attention_mask.to(at::kBool)
                                                   : at::ones({b, t}, at::TensorOptions().dtype(at::kBool).device(device));
  // Positions count real tokens only (HF generate: cumsum(mask) - 1), continuing from the cache.
  at::Tensor positions = mask.to(at::kLong).cumsum(1) - 1;
  if (cache != nullptr) positions = positions + cache->next_position.unsqueeze(1);
  positions = positions.clamp_min(0);

  at::Tensor key_valid;  // [B, S]: a cache's shared prefix, then its own slots
  at::Tensor bias;       // [B, 1, T, S] additive, only for a cache with a shared prefix or a wrapped ring
  const auto act_dtype = model_->embed_tokens->weight.scalar_type();
  if (cache != nullptr) {
    key_valid = cache->begin_append(mask);
    if (cache->needs_bias(t)) bias = cache->attention_bias(key_valid, t, act_dtype);
  } else {
    key_valid = mask;
  }

  const at::Tensor freqs = positions.to(at::kFloat).unsqueeze(-1) * inv_freq_.to(device).view({1, 1, -1});
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  const at::Tensor cos = emb.cos().to(act_dtype), sin = emb.sin().to(act_dtype);
  const bool fused = fused_path();

  at::Tensor h = call_unit(0, input_ids, [this](const at::Tensor& ids) { return model_->embed_tokens(ids); });
  if (collect != nullptr) collect->push_back(h);
  for (size_t i = 0; i < model_->decoder_layers.size(); ++i) {
    // Positions before first_position feed later ones only through keys and values, which the
    // last layer's own output does not produce: it starts its queries there.
    const int64_t first = i + 1 == model_->decoder_layers.size() ? first_position : 0;
    h = call_unit(i + 1, h, [this, cos, sin, key_valid, bias, cache, i, fused, first](const at::Tensor& x) {
      if (fused && first == 0) return model_->decoder_layers[i]->forward_fused(x, cos, sin, key_valid, bias, cache, i);
      return model_->decoder_layers[i]->forward(x, cos, sin, key_valid, bias, cache, i, first);
    });
    if (collect != nullptr && i + 1 < model_->decoder_layers.size()) collect->push_back(h);
  }
  h = call_unit(0, h, [this](const at::Tensor& x) { return model_->norm(x); });
  if (collect != nullptr) collect->push_back(h);
  if (cache != nullptr) cache->end_append(mask);
  return h;
}

at::Tensor DecoderImpl::hidden(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache,
                               int64_t first_position) {
  return run(input_ids, attention_mask, cache, first_position, nullptr);
}

at::Tensor DecoderImpl::logits_from_hidden(const at::Tensor& hidden) {
  if (fused_path()) return model_->inference_head(hidden, {lm_head_weight_}, {}).to(at::kFloat);
  return call_unit(0, hidden, [this](const at::Tensor& x) { return at::linear(x, lm_head_weight_).to(at::kFloat); });
}

bool DecoderImpl::fused_path() const {
  // Only where no wrapper (trainer/fsdp.h) owns the parameters' storage.
  return fused_inference_ && !unit_call_ && !at::GradMode::is_enabled();
}

void DecoderImpl::set_fused_inference(bool on) {
  fused_inference_ = on;
  if (on) return;
  model_->inference_head.drop();
  for (auto& layer : model_->decoder_layers) {
    layer->self_attn->drop_fused();
    layer->mlp->drop_fused();
  }
}

at::Tensor DecoderImpl::call_unit(size_t unit, const at::Tensor& input, const UnitBody& body) {
  return unit_call_ ? unit_call_(unit, input, body) : body(input);
}

std::vector<DecoderUnit> DecoderImpl::units() {
  std::vector<DecoderUnit> out(1 + model_->decoder_layers.size());
  out[0].name = "root";
  for (size_t i = 1; i < out.size(); ++i) out[i].name = fmt::format("model.layers.{}", i - 1);
  const std::string layer_prefix = "model.layers.";
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    size_t unit = 0;
    if (item.key().compare(0, layer_prefix.size(), layer_prefix) == 0)
      unit = 1 + std::stoul(item.key().substr(layer_prefix.size()));
    out[unit].param_names.push_back(item.key());
    out[unit].params.push_back(item.value());
    out[unit].shapes.push_back(shapes_.at(item.key()));
  }
  return out;
}

at::Tensor DecoderImpl::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask, KvCache* cache) {
  return logits_from_hidden(run(input_ids, attention_mask, cache, 0, nullptr));
}

std::vector<at::Tensor> DecoderImpl::hidden_states(const at::Tensor& input_ids, const at::Tensor& attention_mask) {
  std::vector<at::Tensor> states;
  run(input_ids, attention_mask, nullptr, 0, &states);
  return states;
}

Status check_weights(Decoder& decoder, const TensorMap& tensors) {
  const auto& shapes = decoder->parameter_shapes();
  for (const auto& [name, shape] : shapes) {
    const auto it = tensors.find(name);
    if (it == tensors.end()) return Status::error(fmt::format("checkpoint is missing tensor '{}'", name));
    if (it->second.sizes() != at::IntArrayRef(shape))
      return Status::error(fmt::format("tensor '{}' has shape {}, the model needs {}", name,
                                       fmt::join(it->second.sizes(), "x"), fmt::join(shape, "x")));
  }
  for (const auto& [name, tensor] : tensors) {
    if (shapes.count(name)) continue;
    // Tied checkpoints sometimes still carry the head; old ones carry rotary buffers.
    if (name == "lm_head.weight" && decoder->options().tie_word_embeddings) continue;
    if (name.size() > 9 && name.compare(name.size() - 9, 9, ".inv_freq") == 0) continue;
    return Status::error(fmt::format("checkpoint has unexpected tensor '{}'", name));
  }
  return Status::ok();
}

Status load_weights(Decoder& decoder, const TensorMap& tensors) {
  if (Status s = check_weights(decoder, tensors); !s.is_ok()) return s;
  torch::NoGradGuard no_grad;
  for (const auto& item : decoder->named_parameters(/*recurse=*/true)) item.value().copy_(tensors.at(item.key()));
  return Status::ok();
}

namespace {

StatusOr<at::ScalarType> chosen_dtype(const std::string& dtype, const DecoderOptions& options) {
  const std::string chosen = dtype.empty() ? options.torch_dtype : dtype;
  if (chosen == "float32") return at::kFloat;
  if (chosen == "bfloat16") return at::kBFloat16;
  if (chosen == "float16") return at::kHalf;
  return Status::error(fmt::format("dtype '{}' is not supported (float32, bfloat16, float16)", chosen));
}

// A model directory's configuration, its mapped weights and the dtype to compute in.
struct DecoderFiles {
  DecoderOptions options;
  TensorMap tensors;
  at::ScalarType type;
};

StatusOr<DecoderFiles> read_decoder_files(const std::string& dir, const std::string& dtype) {
  StatusOr<DecoderOptions> options = load_decoder_config(dir);
  if (!options) return options.status();
  StatusOr<TensorMap> tensors = read_safetensors_dir(dir);
  if (!tensors) return tensors.status();
  StatusOr<at::ScalarType> type = chosen_dtype(dtype, *options);
  if (!type) return type.status();
  return DecoderFiles{*options, std::move(tensors).value(), *type};
}

}  // namespace

StatusOr<Decoder> load_decoder(const std::string& dir, const std::string& dtype, const std::string& device) {
  StatusOr<DecoderFiles> files = read_decoder_files(dir, dtype);
  if (!files) return files.status();
  Decoder decoder(files->options);
  decoder->to(torch::Device(device), files->type);
  Status status = load_weights(decoder, files->tensors);
  if (!status.is_ok()) return Status::error(fmt::format("{}: {}", dir, status.message()));
  decoder->eval();
  return decoder;
}

StatusOr<MappedDecoder> map_decoder(const std::string& dir, const std::string& dtype, const std::string& device) {
  StatusOr<DecoderFiles> files = read_decoder_files(dir, dtype);
  if (!files) return files.status();
  MappedDecoder mapped{Decoder(files->options, ParameterStorage::kDeferred), std::move(files->tensors)};
  mapped.model->to(torch::Device(device), files->type);  // placeholders: nothing to copy
  if (Status s = check_weights(mapped.model, mapped.weights); !s.is_ok())
    return Status::error(fmt::format("{}: {}", dir, s.message()));
  mapped.model->eval();
  return mapped;
}

Status save_decoder(Decoder& decoder, const std::string& dir) {
  ::mkdir(dir.c_str(), 0755);
  TensorMap tensors;
  for (const auto& item : decoder->named_parameters(true)) tensors[item.key()] = item.value();
  DecoderOptions options = decoder->options();
  const auto type = decoder->named_parameters(true)[0].value().scalar_type();
  options.torch_dtype = type == at::kBFloat16 ? "bfloat16" : type == at::kHalf ? "float16" : "float32";
  Status status = write_safetensors(dir + "/model.safetensors", tensors);
  if (!status.is_ok()) return status;
  return write_file_atomic(dir + "/config.json", decoder_config_json(options));
}

}  // namespace grpo
