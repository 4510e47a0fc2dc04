#pragma once
// AdamW over a list of tensors (the shard a rank owns), the warm-up + cosine learning-rate
// schedule and global gradient-norm clipping. PyTorch's update formulas, so results agree.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/config.h"

namespace grpo {

class AdamW {
 public:
  AdamW(std::vector<at::Tensor> params, const OptimizerConfig& options);

  // One update of every parameter with a defined gradient, at learning rate `lr`.
  void step(double lr);
  void zero_grad();

  int64_t steps_taken() const { return step_; }
  // Restores the state a checkpoint saved (moment tensors are copied into place).
  void load_state(int64_t steps_taken, const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq);
  const std::vector<at::Tensor>& params() const { return params_; }
  const std::vector<at::Tensor>& exp_avg() const { return exp_avg_; }
  const std::vector<at::Tensor>& exp_avg_sq() const { return exp_avg_sq_; }

 private:
  std::vector<at::Tensor> params_;
  std::vector<at::Tensor> exp_avg_;
  std::vector<at::Tensor> exp_avg_sq_;
  at::Tensor scratch_;  // the largest parameter's size, for the update's denominator
  OptimizerConfig options_;
  int64_t step_ = 0;
};

// Learning rate for optimizer step `step` (0-based) of `total_steps`: linear warm-up to lr,
// then constant or cosine decay to lr * min_lr_ratio.
double scheduled_lr(const OptimizerConfig& options, int64_t step, int64_t total_steps);

// Scales the gradients so their global L2 norm is at most max_norm (torch's clip_grad_norm_:
// factor max_norm / (norm + 1e-6), never above 1). Returns the norm before clipping, a 0-dim tensor.
at::Tensor clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace grpo
