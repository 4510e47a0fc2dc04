#pragma once
// The weights a finished training run exported (<run_dir>/final), and how far two sets differ,
// for end-to-end tests that compare runs.

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include <ATen/ATen.h>

#include "models/safetensors.h"

namespace grpo::testing {

inline TensorMap final_weights(const std::filesystem::path& run_dir) {
  StatusOr<TensorMap> t = read_safetensors((run_dir / "final" / "model.safetensors").string());
  EXPECT_TRUE(t.is_ok()) << t.status().message();
  TensorMap copy;  // owned: the file's mapping goes away with `t`
  if (t.is_ok())
    for (const auto& [name, tensor] : *t) copy[name] = tensor.clone();
  return copy;
}

// Largest absolute difference of any element; huge when the tensor names differ.
inline double max_difference(const TensorMap& a, const TensorMap& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (const auto& [name, t] : a) {
    if (!b.count(name)) return 1e30;
    worst = std::max(worst, (t - b.at(name)).abs().max().item<double>());
  }
  return worst;
}

}  // namespace grpo::testing
