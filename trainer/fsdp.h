#pragma once
// FSDP-style parameter sharding (ZeRO-3) and activation checkpointing, applied to a decoder from
// outside through its unit seam (models/decoder.h: units(), set_unit_call), as torchtitan's
// parallelize() does; the model itself knows nothing of ranks.
//
// Sharded (zero_stage 3): each unit's parameters, flattened end to end and padded to a multiple of
// the rank count, are cut into equal contiguous shards; a rank keeps only its shard, as an fp32
// master (the optimizer's parameter, requires grad). Between passes the decoder's parameters are
// empty placeholders. Before a unit runs, the shards are cast to param_dtype and all-gathered into
// the unit's parameters; right after, they are emptied again. In backward the unit is gathered
// again and its forward recomputed (so activations inside a unit are never kept: stage 3 implies
// per-unit activation checkpointing), its gradient is flattened in reduce_dtype and
// reduce-scattered, and each rank's slice accumulates into its master's .grad. No rank ever holds
// more than one unit's whole parameters or gradient outside gather_all(). The masters come from the
// model's parameters or, when it was built deferred, from a ShardSource (the mapped model files, a
// checkpoint's shards saved on any rank count), which is asked for this rank's slices only.
//
// Prefetch (ShardOptions::prefetch): while a layer computes, the next unit of the pass is already
// being all-gathered (Communicator::start_all_gather_into: NCCL on a side stream), so on a GPU the
// transfer hides behind the compute; at most two units are whole at once. Forward: the embedding
// call starts layer 1, layer i starts layer i + 1 and the last layer starts the root (for the final
// norm). Backward: layer i starts layer i - 1 and layer 1 the root (for the embedding). The root's
// other calls (norm, head) start nothing: their successor is ambiguous from the unit alone. Every
// rank makes the same calls, so they start the same gathers; a prefetched unit that is not the
// next one asked for is waited for and dropped (counted as wasted).
//
// Not sharded (zero_stage 0-2) with activation_checkpointing: every decoder layer keeps only its
// input in forward and recomputes itself in backward; gradients accumulate in the parameters' .grad
// as usual (the optimizer, trainer/distributed_optimizer.h, reduces them).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "dist/communicator.h"
#include "models/decoder.h"
#include "trainer/shard_layout.h"

namespace grpo {

struct ShardOptions {
  bool shard_parameters = true;            // ZeRO-3; false: only activation checkpointing (if asked)
  at::ScalarType param_dtype = at::kFloat;  // dtype of gathered parameters (the compute dtype)
  at::ScalarType reduce_dtype = at::kFloat; // dtype gradients are reduce-scattered in
  bool activation_checkpointing = false;    // recompute each layer in backward (implied when sharded)
  std::optional<bool> prefetch;             // start the next unit's gather early; unset: on for CUDA parameters
};

// Where a rank's master shards come from: elements [begin, begin + count) of `unit` flattened
// as a new tensor (float32 or any floating dtype; elements past the unit's end are 0). Only this
// rank's range is ever asked for, so a source over memory-mapped files reads only those pages.
using ShardSource = std::function<at::Tensor(const UnitLayout& unit, int64_t begin, int64_t count)>;

// Slices of whole tensors by Hugging Face name (e.g. the zero-copy views of map_decoder), each
// element rounded through `round_through` first (the model's dtype, as copying into its parameters
// would) and then widened to float32.
ShardSource slices_of(const TensorMap& whole, at::ScalarType round_through = at::kFloat);
// Slices of a stage-3 checkpoint's shards of `kind` (master, exp_avg, exp_avg_sq), saved on any
// rank count (shard_layout.h: read_flat_range).
ShardSource slices_of(const ShardLayout& saved, const std::vector<TensorMap>& shards, const std::string& kind);

class ShardedDecoder {
 public:
  // With `source`, the masters are filled from it and the model's parameters are never read (they
  // may be deferred placeholders: models/decoder.h ParameterStorage::kDeferred); without, from them.
  ShardedDecoder(Decoder model, Communicator& comm, ShardOptions options, const ShardSource& source = {});
  ~ShardedDecoder();
  ShardedDecoder(const ShardedDecoder&) = delete;
  ShardedDecoder& operator=(const ShardedDecoder&) = delete;

  Decoder& model() { return model_; }
  bool sharded() const { return options_.shard_parameters; }
  // Every unit's fp32 master shard [shard elements] (requires grad): what the optimizer updates.
  std::vector<at::Tensor> master_shards() const;
  // Elements of all masters on this rank.
  int64_t shard_numel() const;
  // The units and how they are cut over this communicator's ranks.
  const ShardLayout& layout() const { return layout_; }

  // Gathers every unit and keeps it until release_all() (for generation, where ranks do not run
  // the same number of passes, and for export). Collective. Nesting counts.
  void gather_all();
  void release_all();

  // Every unit's whole parameters cast to `dtype`, one unit at a time, all ranks together: `visit`
  // runs on rank 0 only, with the unit's tensors in layout order, which are freed before the next
  // unit is gathered. So no rank holds more than one whole unit (a streamed export).
  using UnitVisitor = std::function<void(const UnitLayout& unit, const std::vector<at::Tensor>& params)>;
  void visit_whole_units(at::ScalarType dtype, const UnitVisitor& visit);
  const ShardOptions& options() const { return options_; }

  // Seconds this rank spent in the parameter all-gathers and gradient reduce-scatters since it was
  // built (host time; with NCCL the launches, not the transfers).
  struct CollectiveSeconds {
    double gather = 0;
    double reduce_scatter = 0;
  };
  CollectiveSeconds collective_seconds() const;
  // Prefetched gathers since this was built: used by the unit they were started for, and wasted
  // (waited for and dropped because another unit came first).
  struct PrefetchCounts {
    int64_t used = 0;
    int64_t wasted = 0;
  };
  PrefetchCounts prefetch_counts() const { return prefetch_counts_; }
  bool prefetching() const { return prefetch_; }

  // Whole tensors, one per decoder parameter in named_parameters() order, from per-unit shards
  // shaped like master_shards() (the masters themselves, or optimizer moments). Collective. With
  // `root_only`, ranks other than 0 drop each unit once gathered and get an empty list back, so
  // they never hold more than one whole unit (a checkpoint written by rank 0).
  std::vector<at::Tensor> whole_from_shards(const std::vector<at::Tensor>& shards, bool root_only = false);
  // This rank's per-unit shards (fp32) of whole tensors given in named_parameters() order.
  std::vector<at::Tensor> shards_from_whole(const std::vector<at::Tensor>& whole) const;

  struct Unit;
  // Gathers `unit` (or takes its prefetched gather) unless held; the next unit of the pass, if any,
  // starts gathering. `next` is past the last unit for none. (Called by the units' autograd function.)
  void gather(Unit& unit, size_t next);

 private:
  at::Tensor call(size_t unit, const at::Tensor& input, const UnitBody& body);
  // The unit each pass runs after `unit` (past the last unit: none known, or prefetch off).
  size_t next_in_forward(size_t unit, const at::Tensor& input) const;
  size_t next_in_backward(size_t unit) const;
  void start_prefetch(size_t unit);
  void finish_prefetch();  // waits for the pending gather; installs it if its unit is held by then
  void drop_prefetch();    // finish_prefetch for a gather nobody asked for (counted as wasted)

  Decoder model_;
  Communicator& comm_;
  ShardOptions options_;
  std::vector<std::shared_ptr<Unit>> units_;
  ShardLayout layout_;
  bool prefetch_ = false;
  size_t prefetched_ = 0;                         // the unit of pending_ (when set)
  std::unique_ptr<PendingCollective> pending_;    // at most one gather in flight
  at::Tensor pending_full_;                       // its [ranks, shard] output
  PrefetchCounts prefetch_counts_;
};

// Wraps `model` (every rank together): ZeRO-3 when options.shard_parameters, else activation
// checkpointing only. The model's parameters are released into the shards when sharded.
// With `source`, the masters come from it (see ShardedDecoder's constructor).
std::unique_ptr<ShardedDecoder> shard(Decoder model, Communicator& comm, const ShardOptions& options,
                                      const ShardSource& source = {});

// RAII: the whole model gathered for the guard's life (a no-op for an unsharded wrapper).
class FullParameters {
 public:
  explicit FullParameters(ShardedDecoder* model) : model_(model) {
    if (model_ != nullptr && model_->sharded()) model_->gather_all();
  }
  ~FullParameters() {
    if (model_ != nullptr && model_->sharded()) model_->release_all();
  }
  FullParameters(const FullParameters&) = delete;
  FullParameters& operator=(const FullParameters&) = delete;

 private:
  ShardedDecoder* model_;
};

}  // namespace grpo
