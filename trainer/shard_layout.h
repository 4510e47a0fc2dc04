#pragma once
// How ZeRO-3 (trainer/fsdp.h) cuts a decoder into shards, as data: each unit's parameters (names,
// full shapes) flattened end to end, padded to a multiple of the rank count, and cut into `ranks`
// equal contiguous shards. A stage-3 checkpoint records it in its manifest, so that a run on any
// rank count can find the elements of its own shard in the saved ones (resharding on load).

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json.hpp>

#include "core/status.h"
#include "models/safetensors.h"

namespace grpo {

struct UnitLayout {
  std::string name;                      // "root", "model.layers.3" (models/decoder.h: DecoderUnit)
  std::vector<std::string> param_names;  // Hugging Face names, in flattening order
  std::vector<std::vector<int64_t>> shapes;
  std::vector<int64_t> offsets;          // each parameter's first element in the flattened unit
  int64_t numel = 0;                     // elements of the unit, without padding
  int64_t shard = 0;                     // elements per rank: ceil(numel / ranks)
};

struct ShardLayout {
  int64_t ranks = 1;
  std::vector<UnitLayout> units;
};

// A unit of these parameters, split over `ranks`.
UnitLayout make_unit_layout(std::string name, std::vector<std::string> param_names,
                            std::vector<std::vector<int64_t>> shapes, int64_t ranks);

nlohmann::json layout_to_json(const ShardLayout& layout);
// `where` names the file in errors.
StatusOr<ShardLayout> layout_from_json(const nlohmann::json& json, const std::string& where);

// Ok when both cut the same units of the same parameters (names and shapes), whatever their rank
// counts; else an error naming the first difference.
Status check_same_units(const ShardLayout& saved, const ShardLayout& now);

// The name of unit `unit`'s shard of `kind` (master, exp_avg, exp_avg_sq) in a rank's shard file.
std::string shard_tensor_name(const std::string& kind, const UnitLayout& unit);

// Elements [begin, begin + count) of unit `unit`, flattened, in float32, assembled from the saved
// shards: shards[r] holds rank r's tensor shard_tensor_name(kind, unit) of [layout.units[unit].shard]
// (e.g. zero-copy views of memory-mapped files; only the overlapping slices are read). Elements past
// the unit's end are 0.
at::Tensor read_flat_range(const ShardLayout& layout, const std::vector<TensorMap>& shards, const std::string& kind,
                           size_t unit, int64_t begin, int64_t count);

}  // namespace grpo
