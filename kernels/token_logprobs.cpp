#include "kernels/token_logprobs.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <torch/autograd.h>

#include "kernels/cuda_kernels.h"

namespace grpo {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

int64_t chunk_size(const TokenLogprobsOptions& options, int64_t vocab) {
  if (options.chunk_tokens > 0) return options.chunk_tokens;
  return std::max<int64_t>(1, (int64_t{1} << 26) / std::max<int64_t>(vocab, 1));
}

// log softmax(hidden . W^T / temperature) of one chunk, in float32 [rows, V].
at::Tensor chunk_log_softmax(const at::Tensor& hidden, const at::Tensor& weight, double temperature,
                             at::Tensor* logsumexp) {
  at::Tensor z = at::linear(hidden, weight).to(at::kFloat);
  if (temperature != 1.0) z.div_(temperature);
  at::Tensor lse = z.logsumexp(-1, /*keepdim=*/true);
  if (logsumexp != nullptr) *logsumexp = lse.squeeze(1);
  return z.sub_(lse);
}

// d(g . logprob + g_H . entropy) / dz of one chunk, z = h . W^T / temperature, float32 [rows, V]:
// dz = -p * (g + g_H * (log p + H)) + onehot(target) * g, built in place over log p and p.
at::Tensor logit_gradients(const at::Tensor& h, const at::Tensor& weight, const at::Tensor& targets,
                           const at::Tensor& lse, const at::Tensor& grad_logp, const at::Tensor& grad_entropy,
                           double temperature) {
  at::Tensor z = at::linear(h, weight).to(at::kFloat);
  if (temperature != 1.0) z.div_(temperature);
  at::Tensor logp = z.sub_(lse.unsqueeze(1));
  at::Tensor p = logp.exp();
  const at::Tensor g = grad_logp.unsqueeze(1);
  at::Tensor factor;
  if (grad_entropy.defined()) {
    const at::Tensor entropy = (p * logp).sum(-1, /*keepdim=*/true).neg_();
    factor = logp.add_(entropy).mul_(grad_entropy.unsqueeze(1)).add_(g);
  } else {
    factor = g;
  }
  at::Tensor dz = p.mul_(factor).neg_();
  dz.scatter_add_(1, targets.unsqueeze(1), g);
  if (temperature != 1.0) dz.div_(temperature);
  return dz;
}

class ChunkedTokenLogprobs : public torch::autograd::Function<ChunkedTokenLogprobs> {
 public:
  // hidden [M, H], weight [V, H], targets [M] long, mask [M] bool -> {logprobs [M], entropy [M]}.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& hidden, const at::Tensor& weight,
                               const at::Tensor& targets, const at::Tensor& mask, double temperature, int64_t chunk,
                               bool with_entropy) {
    const int64_t rows = hidden.size(0);
    const auto f32 = hidden.options().dtype(at::kFloat);
    at::Tensor logprobs = at::empty({rows}, f32);
    at::Tensor entropy = with_entropy ? at::empty({rows}, f32) : at::Tensor();
    at::Tensor lse = at::empty({rows}, f32);
    // On the CUDA kernels backward needs each row's entropy, unmasked; the ATen path recomputes it.
    const bool fused = runs_on_cuda_kernels(hidden, weight);
    at::Tensor row_entropy = fused ? at::empty({rows}, f32) : at::Tensor();
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t len = std::min(chunk, rows - start);
      if (fused) {
        const TokenStatistics s = token_statistics_cuda(at::linear(hidden.narrow(0, start, len), weight),
                                                        targets.narrow(0, start, len), temperature);
        lse.narrow(0, start, len).copy_(s.logsumexp);
        logprobs.narrow(0, start, len).copy_(s.logprobs);
        row_entropy.narrow(0, start, len).copy_(s.entropy);
        continue;
      }
      at::Tensor chunk_lse;
      const at::Tensor logp = chunk_log_softmax(hidden.narrow(0, start, len), weight, temperature, &chunk_lse);
      lse.narrow(0, start, len).copy_(chunk_lse);
      logprobs.narrow(0, start, len).copy_(logp.gather(1, targets.narrow(0, start, len).unsqueeze(1)).squeeze(1));
      if (with_entropy) entropy.narrow(0, start, len).copy_(logp.exp().mul_(logp).sum(-1).neg_());
    }
    if (fused && with_entropy) entropy.copy_(row_entropy);
    const at::Tensor masked_out = mask.logical_not();
    logprobs.masked_fill_(masked_out, 0.0);
    if (with_entropy) entropy.masked_fill_(masked_out, 0.0);
    ctx->save_for_backward({hidden, weight, targets, mask, lse, row_entropy});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["chunk"] = chunk;
    return {logprobs, with_entropy ? entropy : at::zeros({rows}, f32)};
  }

  // d logp_t / dz = onehot(t) - p;  d H / dz = -p (log p + H);  z = hidden . W^T / temperature.
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &hidden = saved[0], &weight = saved[1], &targets = saved[2], &mask = saved[3], &lse = saved[4];
    const at::Tensor& row_entropy = saved[5];  // defined when forward ran on the CUDA kernels
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const int64_t rows = hidden.size(0);
    const at::Tensor valid = mask.to(at::kFloat);
    const at::Tensor grad_logp = grad_outputs[0].defined() ? grad_outputs[0].to(at::kFloat) * valid : at::zeros_like(lse);
    const at::Tensor grad_entropy = grad_outputs[1].defined() ? grad_outputs[1].to(at::kFloat) * valid : at::Tensor();
    const bool want_hidden = ctx->needs_input_grad(0), want_weight = ctx->needs_input_grad(1);

    at::Tensor grad_hidden = want_hidden ? at::empty_like(hidden) : at::Tensor();
    // float32 accumulator across chunks, whatever the weight's dtype.
    at::Tensor grad_weight = want_weight ? at::zeros(weight.sizes(), weight.options().dtype(at::kFloat)) : at::Tensor();
    for (int64_t start = 0; start < rows; start += chunk) {
      const int64_t len = std::min(chunk, rows - start);
      const at::Tensor h = hidden.narrow(0, start, len);
      const at::Tensor t = targets.narrow(0, start, len), chunk_lse = lse.narrow(0, start, len);
      const at::Tensor g = grad_logp.narrow(0, start, len);
      const at::Tensor g_entropy = grad_entropy.defined() ? grad_entropy.narrow(0, start, len) : at::Tensor();
      const at::Tensor dz =
          row_entropy.defined()
              ? token_logit_gradients_cuda(at::linear(h, weight), t,
                                           {chunk_lse, at::Tensor(), row_entropy.narrow(0, start, len)}, g, g_entropy,
                                           temperature)
              : logit_gradients(h, weight, t, chunk_lse, g, g_entropy, temperature);
      if (want_hidden) grad_hidden.narrow(0, start, len).copy_(at::matmul(dz.to(weight.scalar_type()), weight));
      if (want_weight) grad_weight.addmm_(dz.t(), h.to(at::kFloat));
    }
    if (want_weight) grad_weight = grad_weight.to(weight.scalar_type());
    return {grad_hidden, grad_weight, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct FlatInputs {
  at::Tensor hidden, targets, mask;
};

FlatInputs flatten(const at::Tensor& hidden, const at::Tensor& head_weight, const at::Tensor& targets,
                   const at::Tensor& mask, const TokenLogprobsOptions& options) {
  TORCH_CHECK(head_weight.dim() == 2 && hidden.size(-1) == head_weight.size(1), "token_logprobs: head weight ",
              head_weight.sizes(), " does not match hidden ", hidden.sizes());
  TORCH_CHECK(hidden.sizes().slice(0, hidden.dim() - 1) == targets.sizes(), "token_logprobs: hidden ", hidden.sizes(),
              " and targets ", targets.sizes(), " disagree");
  TORCH_CHECK(!mask.defined() || mask.sizes() == targets.sizes(), "token_logprobs: mask ", mask.sizes(),
              " does not match targets ", targets.sizes());
  TORCH_CHECK(options.temperature > 0, "token_logprobs: temperature must be > 0, got ", options.temperature);
  FlatInputs flat;
  flat.hidden = hidden.reshape({-1, hidden.size(-1)});
  flat.targets = targets.reshape({-1}).to(hidden.device(), at::kLong);
  flat.mask = mask.defined() ? mask.reshape({-1}).to(hidden.device(), at::kBool)
                             : at::ones({flat.targets.size(0)}, flat.targets.options().dtype(at::kBool));
  return flat;
}

}  // namespace

TokenLogprobs token_logprobs(const at::Tensor& hidden, const at::Tensor& head_weight, const at::Tensor& targets,
                             const at::Tensor& mask, const TokenLogprobsOptions& options) {
  const FlatInputs flat = flatten(hidden, head_weight, targets, mask, options);
  const variable_list out =
      ChunkedTokenLogprobs::apply(flat.hidden, head_weight, flat.targets, flat.mask, options.temperature,
                                  chunk_size(options, head_weight.size(0)), options.with_entropy);
  TokenLogprobs result;
  result.logprobs = out[0].view(targets.sizes());
  if (options.with_entropy) result.entropy = out[1].view(targets.sizes());
  return result;
}

TokenLogprobs token_logprobs_unchunked(const at::Tensor& hidden, const at::Tensor& head_weight,
                                       const at::Tensor& targets, const at::Tensor& mask,
                                       const TokenLogprobsOptions& options) {
  const FlatInputs flat = flatten(hidden, head_weight, targets, mask, options);
  at::Tensor logits = at::linear(flat.hidden, head_weight).to(at::kFloat);
  if (options.temperature != 1.0) logits = logits / options.temperature;
  const at::Tensor logp_all = at::log_softmax(logits, -1);
  const at::Tensor keep = flat.mask.to(at::kFloat);
  TokenLogprobs result;
  result.logprobs = (logp_all.gather(1, flat.targets.unsqueeze(1)).squeeze(1) * keep).view(targets.sizes());
  if (options.with_entropy)
    result.entropy = (-(logp_all.exp() * logp_all).sum(-1) * keep).view(targets.sizes());
  return result;
}

}  // namespace grpo
