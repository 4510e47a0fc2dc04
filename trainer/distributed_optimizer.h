#pragma once
// The update every data-parallel rank applies after backward: gradients summed over ranks,
// clipped by their global norm, then AdamW. trainer.zero_stage says where the optimizer state
// lives (the ZeRO stages of DeepSpeed, which OpenRLHF users know):
//   0: every rank all-reduces the gradients and updates every parameter with whole AdamW state;
//   1: the parameters, flattened into one buffer padded to a multiple of the rank count, are cut
//      into equal contiguous shards; each rank keeps AdamW moments for its shard only, updates only
//      it, and the shards are all-gathered back into every rank's parameters;
//   2: as 1, but the gradients are reduce-scattered, so no rank holds the whole summed gradient.
//      Backward still fills every parameter's whole local gradient first (one model-sized
//      buffer), and the step copies it into one flat buffer before the reduce-scatter (a second),
//      releasing the local gradients once sent: stage 2 saves the optimizer state's memory, not
//      the gradients' peak. For that use 3;
//   3: the parameters themselves are sharded by trainer/fsdp.h (ShardedDecoder), which
//      reduce-scatters each unit's gradient as backward leaves it, so this optimizer only clips
//      and updates the fp32 master shards (whatever trainer.param_dtype the passes compute in).
// Elementwise the update is AdamW's (trainer/optimizer.h) in every stage, so all stages train the
// same model to float tolerance (tests/mpi/distributed_test.cpp). Checkpoints hold whole moments
// at stages 0-2 and per-rank moment shards with their layout at stage 3; either kind resumes at any
// stage and rank count (trainer/train_common.cpp reshards on load).

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/config.h"
#include "dist/communicator.h"
#include "trainer/fsdp.h"
#include "trainer/optimizer.h"

namespace grpo {

class ShardedDecoder;

class DistributedAdamW {
 public:
  DistributedAdamW(std::vector<at::Tensor> params, const OptimizerConfig& options, Communicator& comm, int zero_stage);
  // Stage 3: updates `model`'s master shards, whose gradients arrive already reduce-scattered.
  DistributedAdamW(ShardedDecoder& model, const OptimizerConfig& options, Communicator& comm);

  void zero_grad();
  // Sums the gradients over ranks, clips them to options.max_grad_norm and steps at `lr`. Returns
  // the global norm before clipping, the same on every rank; when it is not finite the update is
  // skipped on every rank and the parameters and state are left untouched.
  double step(double lr);

  int64_t steps_taken() const { return adam_->steps_taken(); }
  // Whole moments, one per parameter (stage 3: per decoder parameter, in named_parameters() order),
  // on every rank. A collective for stages 1 to 3.
  // With `root_only` at stage 3, ranks other than 0 only take part and get empty lists.
  void gather_moments(std::vector<at::Tensor>* exp_avg, std::vector<at::Tensor>* exp_avg_sq, bool root_only = false);
  // Restores whole per-parameter moments (from a checkpoint of any stage and rank count).
  void load_state(int64_t steps_taken, const std::vector<at::Tensor>& exp_avg, const std::vector<at::Tensor>& exp_avg_sq);

  // Stage 3: restores this rank's moment shards from sources of whole moments (trainer/fsdp.h, e.g.
  // a checkpoint of any rank count), one unit at a time, into the moments in place: no second copy.
  void load_shard_state(int64_t steps_taken, const ShardSource& exp_avg, const ShardSource& exp_avg_sq);
  // Stage 3: this rank's moment shards, one per unit (the optimizer's own tensors, not copies).
  const std::vector<at::Tensor>& exp_avg_shards() const;
  const std::vector<at::Tensor>& exp_avg_sq_shards() const;

  int zero_stage() const { return stage_; }
  // Elements of optimizer state per moment this rank holds (the whole model's for stage 0).
  int64_t state_numel() const;

 private:
  at::Tensor& flat_grads();            // this step's gradients copied into flat_grad_
  at::Tensor shard_of(const at::Tensor& flat) const;
  void scatter_into_params(const at::Tensor& flat);
  // Copies this rank's range of `whole` (tensors shaped like the parameters, flattened end to end)
  // into `shard`.
  void copy_shard(const std::vector<at::Tensor>& whole, at::Tensor& shard) const;
  std::vector<at::Tensor> split_like_params(const at::Tensor& flat) const;

  std::vector<at::Tensor> params_;  // stage 3: the master shards, one per unit
  ShardedDecoder* sharded_ = nullptr;
  OptimizerConfig options_;
  Communicator& comm_;
  int stage_;
  int64_t total_ = 0;   // elements of all parameters
  int64_t shard_ = 0;   // elements per rank (stages 1, 2)
  at::Tensor shard_param_;          // this rank's slice of the parameters (stages 1, 2)
  at::Tensor flat_grad_;            // every gradient, flattened (kept between steps)
  at::Tensor gathered_;             // every rank's updated shard (stages 1, 2; kept between steps)
  std::unique_ptr<AdamW> adam_;     // over params_ (stage 0) or {shard_param_}
};

}  // namespace grpo
