#include "trainer/shard_layout.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

namespace grpo {

UnitLayout make_unit_layout(std::string name, std::vector<std::string> param_names,
                            std::vector<std::vector<int64_t>> shapes, int64_t ranks) {
  UnitLayout unit;
  unit.name = std::move(name);
  unit.param_names = std::move(param_names);
  unit.shapes = std::move(shapes);
  for (const auto& shape : unit.shapes) {
    unit.offsets.push_back(unit.numel);
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    unit.numel += n;
  }
  unit.shard = (unit.numel + ranks - 1) / ranks;
  return unit;
}

nlohmann::json layout_to_json(const ShardLayout& layout) {
  nlohmann::json units = nlohmann::json::array();
  for (const UnitLayout& u : layout.units) {
    nlohmann::json params = nlohmann::json::array();
    for (size_t i = 0; i < u.param_names.size(); ++i) params.push_back({{"name", u.param_names[i]}, {"shape", u.shapes[i]}});
    units.push_back({{"name", u.name}, {"numel", u.numel}, {"shard", u.shard}, {"params", params}});
  }
  return {{"ranks", layout.ranks}, {"units", units}};
}

StatusOr<ShardLayout> layout_from_json(const nlohmann::json& json, const std::string& where) {
  try {
    ShardLayout layout;
    layout.ranks = json.at("ranks").get<int64_t>();
    if (layout.ranks < 1) return Status::error(fmt::format("{}: layout.ranks {} is not positive", where, layout.ranks));
    for (const auto& u : json.at("units")) {
      std::vector<std::string> names;
      std::vector<std::vector<int64_t>> shapes;
      for (const auto& p : u.at("params")) {
        names.push_back(p.at("name").get<std::string>());
        shapes.push_back(p.at("shape").get<std::vector<int64_t>>());
      }
      UnitLayout unit = make_unit_layout(u.at("name").get<std::string>(), std::move(names), std::move(shapes), layout.ranks);
      if (unit.numel != u.at("numel").get<int64_t>() || unit.shard != u.at("shard").get<int64_t>())
        return Status::error(fmt::format("{}: unit '{}' says numel {} and shard {}, its parameters make {} and {}", where,
                                         unit.name, u.at("numel").dump(), u.at("shard").dump(), unit.numel, unit.shard));
      layout.units.push_back(std::move(unit));
    }
    return layout;
  } catch (const nlohmann::json::exception& e) {
    return Status::error(fmt::format("{}: malformed layout ({})", where, e.what()));
  }
}

Status check_same_units(const ShardLayout& saved, const ShardLayout& now) {
  if (saved.units.size() != now.units.size())
    return Status::error(fmt::format("the checkpoint has {} units, the model {}", saved.units.size(), now.units.size()));
  for (size_t u = 0; u < now.units.size(); ++u) {
    const UnitLayout &a = saved.units[u], &b = now.units[u];
    if (a.name != b.name || a.param_names != b.param_names || a.shapes != b.shapes)
      return Status::error(fmt::format("unit {} differs: the checkpoint's '{}' holds [{}], the model's '{}' holds [{}]", u,
                                       a.name, fmt::join(a.param_names, ", "), b.name, fmt::join(b.param_names, ", ")));
  }
  return Status::ok();
}

std::string shard_tensor_name(const std::string& kind, const UnitLayout& unit) { return kind + "." + unit.name; }

at::Tensor read_flat_range(const ShardLayout& layout, const std::vector<TensorMap>& shards, const std::string& kind,
                           size_t unit, int64_t begin, int64_t count) {
  const UnitLayout& u = layout.units.at(unit);
  TORCH_CHECK(static_cast<int64_t>(shards.size()) == layout.ranks, "read_flat_range: ", shards.size(), " shard files for ",
              layout.ranks, " ranks");
  at::Tensor out = at::zeros({count}, at::kFloat);
  const int64_t end = std::min(begin + count, u.numel);
  // Saved rank r holds [r * shard, (r + 1) * shard); copy what overlaps [begin, end).
  for (int64_t r = begin / std::max<int64_t>(u.shard, 1); r < layout.ranks && r * u.shard < end; ++r) {
    const int64_t from = std::max(begin, r * u.shard), to = std::min(end, (r + 1) * u.shard);
    if (from >= to) continue;
    const std::string name = shard_tensor_name(kind, u);
    const auto it = shards[r].find(name);
    TORCH_CHECK(it != shards[r].end() && it->second.numel() == u.shard, "read_flat_range: rank ", r, "'s shard has no ",
                name, " of ", u.shard, " elements");
    out.narrow(0, from - begin, to - from).copy_(it->second.reshape({-1}).narrow(0, from - r * u.shard, to - from));
  }
  return out;
}

}  // namespace grpo
