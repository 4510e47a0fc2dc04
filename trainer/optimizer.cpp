#include "trainer/optimizer.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace grpo {

AdamW::AdamW(std::vector<at::Tensor> params, const OptimizerConfig& options)
    : params_(std::move(params)), options_(options) {
  for (const at::Tensor& p : params_) {
    exp_avg_.push_back(at::zeros_like(p));
    exp_avg_sq_.push_back(at::zeros_like(p));
  }
}

void AdamW::step(double lr) {
  ++step_;
  const double bias_correction1 = 1.0 - std::pow(options_.beta1, static_cast<double>(step_));
  const double bias_correction2 = 1.0 - std::pow(options_.beta2, static_cast<double>(step_));
  const double step_size = lr / bias_correction1;
  const double bias_correction2_sqrt = std::sqrt(bias_correction2);

  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i];
    const at::Tensor& grad = p.grad();
    if (!grad.defined()) continue;
    if (options_.weight_decay != 0.0) p.mul_(1.0 - lr * options_.weight_decay);
    exp_avg_[i].lerp_(grad, 1.0 - options_.beta1);
    exp_avg_sq_[i].mul_(options_.beta2).addcmul_(grad, grad, 1.0 - options_.beta2);
    // The denominator goes to one reused buffer: a fresh model-sized temporary per step costs a
    // page fault per 4 KiB once it is past malloc's mmap threshold.
    if (scratch_.numel() < p.numel() || scratch_.scalar_type() != p.scalar_type() || scratch_.device() != p.device())
      scratch_ = at::empty({p.numel()}, p.options());
    at::Tensor denom = scratch_.narrow(0, 0, p.numel()).view_as(p);
    at::sqrt_out(denom, exp_avg_sq_[i]);
    denom.div_(bias_correction2_sqrt).add_(options_.eps);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
}

void AdamW::load_state(int64_t steps_taken, const std::vector<at::Tensor>& exp_avg,
                       const std::vector<at::Tensor>& exp_avg_sq) {
  TORCH_CHECK(exp_avg.size() == params_.size() && exp_avg_sq.size() == params_.size(), "AdamW::load_state: ",
              exp_avg.size(), " moments for ", params_.size(), " parameters");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    exp_avg_[i].copy_(exp_avg[i]);
    exp_avg_sq_[i].copy_(exp_avg_sq[i]);
  }
  step_ = steps_taken;
}

void AdamW::zero_grad() {
  for (at::Tensor& p : params_) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
}

double scheduled_lr(const OptimizerConfig& options, int64_t step, int64_t total_steps) {
  if (step < options.warmup_steps) {
    return options.lr * static_cast<double>(step + 1) / static_cast<double>(options.warmup_steps);
  }
  if (options.schedule == LrSchedule::kConstant) return options.lr;
  const int64_t decay_steps = std::max<int64_t>(1, total_steps - options.warmup_steps);
  const double progress = std::min(1.0, static_cast<double>(step - options.warmup_steps) / decay_steps);
  const double cosine = 0.5 * (1.0 + std::cos(M_PI * progress));
  return options.lr * (options.min_lr_ratio + (1.0 - options.min_lr_ratio) * cosine);
}

at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm) {
  std::vector<at::Tensor> squares;
  for (const at::Tensor& p : params) {
    if (p.grad().defined()) squares.push_back(p.grad().detach().pow(2).sum().to(at::kDouble));
  }
  if (squares.empty()) return at::zeros({}, at::kDouble);
  const at::Tensor norm = at::stack(squares).sum().sqrt();
  if (max_norm > 0.0) {
    // Multiplying by a clamped factor avoids a host sync on the comparison.
    const at::Tensor factor = (max_norm / (norm + 1e-6)).clamp_max(1.0);
    for (const at::Tensor& p : params) {
      if (p.grad().defined()) p.grad().detach().mul_(factor.to(p.grad().scalar_type()));
    }
  }
  return norm;
}

}  // namespace grpo
