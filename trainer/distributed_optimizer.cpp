#include "trainer/distributed_optimizer.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include "trainer/fsdp.h"

namespace grpo {

DistributedAdamW::DistributedAdamW(std::vector<at::Tensor> params, const OptimizerConfig& options, Communicator& comm,
                                   int zero_stage)
    : params_(std::move(params)), options_(options), comm_(comm), stage_(zero_stage) {
  TORCH_CHECK(stage_ >= 0 && stage_ <= 2, "trainer.zero_stage must be 0, 1 or 2, not ", stage_);
  TORCH_CHECK(!params_.empty(), "DistributedAdamW: no parameters");
  for (const at::Tensor& p : params_) total_ += p.numel();
  if (stage_ == 0) {
    adam_ = std::make_unique<AdamW>(params_, options_);
    return;
  }
  shard_ = (total_ + comm_.size() - 1) / comm_.size();
  shard_param_ = at::zeros({shard_}, params_.front().options());
  copy_shard(params_, shard_param_);
  adam_ = std::make_unique<AdamW>(std::vector<at::Tensor>{shard_param_}, options_);
}

DistributedAdamW::DistributedAdamW(ShardedDecoder& model, const OptimizerConfig& options, Communicator& comm)
    : params_(model.master_shards()), sharded_(&model), options_(options), comm_(comm), stage_(3) {
  TORCH_CHECK(model.sharded(), "DistributedAdamW: stage 3 needs a sharded model");
  shard_ = model.shard_numel();
  adam_ = std::make_unique<AdamW>(params_, options_);
}

int64_t DistributedAdamW::state_numel() const { return stage_ == 0 ? total_ : shard_; }

void DistributedAdamW::zero_grad() {
  for (at::Tensor& p : params_)
    if (p.grad().defined()) p.mutable_grad().zero_();
}

at::Tensor DistributedAdamW::shard_of(const at::Tensor& flat) const {
  return flat.narrow(0, shard_ * comm_.rank(), shard_);
}

std::vector<at::Tensor> DistributedAdamW::split_like_params(const at::Tensor& flat) const {
  std::vector<at::Tensor> out;
  int64_t offset = 0;
  for (const at::Tensor& p : params_) {
    out.push_back(flat.narrow(0, offset, p.numel()).view_as(p));
    offset += p.numel();
  }
  return out;
}

void DistributedAdamW::copy_shard(const std::vector<at::Tensor>& whole, at::Tensor& shard) const {
  // Only the tensors overlapping this rank's range are read; the padding past the end stays as is.
  at::NoGradGuard no_grad;
  const int64_t begin = shard_ * comm_.rank(), end = begin + shard_;
  int64_t offset = 0;
  for (const at::Tensor& t : whole) {
    const int64_t from = std::max(begin, offset), to = std::min(end, offset + t.numel());
    if (from < to) shard.narrow(0, from - begin, to - from).copy_(t.detach().reshape({-1}).narrow(0, from - offset, to - from));
    offset += t.numel();
  }
}

void DistributedAdamW::scatter_into_params(const at::Tensor& flat) {
  at::NoGradGuard no_grad;
  const std::vector<at::Tensor> parts = split_like_params(flat);
  for (size_t i = 0; i < params_.size(); ++i) params_[i].detach().copy_(parts[i]);
}

at::Tensor& DistributedAdamW::flat_grads() {
  // Kept between steps: a fresh model-sized buffer each step would fault in every page again.
  const int64_t padded = stage_ == 0 ? total_ : shard_ * comm_.size();
  if (!flat_grad_.defined()) flat_grad_ = at::zeros({padded}, params_.front().options());
  at::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const at::Tensor& p : params_) {
    at::Tensor slot = flat_grad_.narrow(0, offset, p.numel());
    if (p.grad().defined()) slot.copy_(p.grad().reshape({-1}));
    else slot.zero_();
    offset += p.numel();
  }
  return flat_grad_;  // the padding, if any, stays zero
}

double DistributedAdamW::step(double lr) {
  if (stage_ == 0) {
    if (comm_.size() > 1) {
      // One flat buffer, one collective.
      at::Tensor& flat = flat_grads();
      comm_.all_reduce_sum(flat);
      const std::vector<at::Tensor> summed = split_like_params(flat);
      at::NoGradGuard no_grad;
      for (size_t i = 0; i < params_.size(); ++i) {
        if (!params_[i].grad().defined()) params_[i].mutable_grad() = at::zeros_like(params_[i]);
        params_[i].mutable_grad().copy_(summed[i]);
      }
    }
    const double norm = clip_grad_norm(params_, options_.max_grad_norm).item<double>();
    if (std::isfinite(norm)) adam_->step(lr);
    return norm;
  }

  if (stage_ == 3) {
    // The masters' gradients are this rank's slices of the summed ones already.
    at::NoGradGuard no_grad;
    std::vector<double> square_sum{0.0};
    for (const at::Tensor& p : params_)
      if (p.grad().defined()) square_sum[0] += p.grad().pow(2).sum().to(at::kDouble).item<double>();
    comm_.all_reduce_sum(square_sum);
    const double norm = std::sqrt(square_sum[0]);
    if (!std::isfinite(norm)) return norm;
    if (options_.max_grad_norm > 0)
      for (at::Tensor& p : params_)
        if (p.grad().defined()) p.mutable_grad().mul_(std::min(1.0, options_.max_grad_norm / (norm + 1e-6)));
    adam_->step(lr);
    return norm;
  }

  // Stages 1 and 2: this rank's shard of the summed gradient.
  at::Tensor grad_shard;
  {
    at::NoGradGuard no_grad;
    at::Tensor& flat = flat_grads();
    if (stage_ == 2) {
      for (at::Tensor& p : params_) p.mutable_grad().reset();  // sent: the whole local gradient is not kept
      grad_shard = comm_.reduce_scatter_sum(flat);
    } else {
      comm_.all_reduce_sum(flat);
      grad_shard = shard_of(flat);
    }
  }
  // The global norm from every shard's sum of squares, then torch's clip_grad_norm_ factor.
  std::vector<double> square_sum{grad_shard.pow(2).sum().to(at::kDouble).item<double>()};
  comm_.all_reduce_sum(square_sum);
  const double norm = std::sqrt(square_sum[0]);
  if (!std::isfinite(norm)) return norm;
  if (options_.max_grad_norm > 0) grad_shard.mul_(std::min(1.0, options_.max_grad_norm / (norm + 1e-6)));

  copy_shard(params_, shard_param_);  // a resume may have overwritten the parameters
  shard_param_.mutable_grad() = grad_shard;
  adam_->step(lr);
  shard_param_.mutable_grad().reset();
  if (!gathered_.defined()) gathered_ = at::empty({comm_.size(), shard_}, shard_param_.options());
  comm_.all_gather_into(gathered_, shard_param_);
  scatter_into_params(gathered_.view({-1}));
  return norm;
}

void DistributedAdamW::gather_moments(std::vector<at::Tensor>* exp_avg, std::vector<at::Tensor>* exp_avg_sq,
                                      bool root_only) {
  if (stage_ == 3) {
    *exp_avg = sharded_->whole_from_shards(adam_->exp_avg(), root_only);
    *exp_avg_sq = sharded_->whole_from_shards(adam_->exp_avg_sq(), root_only);
    return;
  }
  if (stage_ == 0) {
    *exp_avg = adam_->exp_avg();
    *exp_avg_sq = adam_->exp_avg_sq();
    return;
  }
  *exp_avg = split_like_params(comm_.all_gather(adam_->exp_avg().front()).reshape({-1}));
  *exp_avg_sq = split_like_params(comm_.all_gather(adam_->exp_avg_sq().front()).reshape({-1}));
}

void DistributedAdamW::load_state(int64_t steps_taken, const std::vector<at::Tensor>& exp_avg,
                                  const std::vector<at::Tensor>& exp_avg_sq) {
  if (stage_ == 0) return adam_->load_state(steps_taken, exp_avg, exp_avg_sq);
  if (stage_ == 3)
    return adam_->load_state(steps_taken, sharded_->shards_from_whole(exp_avg), sharded_->shards_from_whole(exp_avg_sq));
  TORCH_CHECK(exp_avg.size() == params_.size() && exp_avg_sq.size() == params_.size(), "load_state: ", exp_avg.size(),
              " moments for ", params_.size(), " parameters");
  auto my_shard = [&](const std::vector<at::Tensor>& moments) {
    at::Tensor shard = at::zeros({shard_}, shard_param_.options());
    copy_shard(moments, shard);
    return shard;
  };
  adam_->load_state(steps_taken, {my_shard(exp_avg)}, {my_shard(exp_avg_sq)});
}

void DistributedAdamW::load_shard_state(int64_t steps_taken, const ShardSource& exp_avg, const ShardSource& exp_avg_sq) {
  TORCH_CHECK(stage_ == 3, "load_shard_state is for stage 3, this optimizer is stage ", stage_);
  at::NoGradGuard no_grad;
  const std::vector<at::Tensor> avg = adam_->exp_avg(), avg_sq = adam_->exp_avg_sq();  // views of the state
  const ShardLayout& layout = sharded_->layout();
  for (size_t u = 0; u < layout.units.size(); ++u) {
    const UnitLayout& unit = layout.units[u];
    const int64_t begin = unit.shard * comm_.rank();
    avg[u].copy_(exp_avg(unit, begin, unit.shard));
    avg_sq[u].copy_(exp_avg_sq(unit, begin, unit.shard));
  }
  adam_->load_state(steps_taken, avg, avg_sq);  // the step count; the moments are already there
}

const std::vector<at::Tensor>& DistributedAdamW::exp_avg_shards() const {
  TORCH_CHECK(stage_ == 3, "exp_avg_shards is for stage 3");
  return adam_->exp_avg();
}

const std::vector<at::Tensor>& DistributedAdamW::exp_avg_sq_shards() const {
  TORCH_CHECK(stage_ == 3, "exp_avg_sq_shards is for stage 3");
  return adam_->exp_avg_sq();
}

}  // namespace grpo
