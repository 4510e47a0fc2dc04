#pragma once
// Fixture values (expected.json) as tensors, and the comparison the fixture tests share.

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

namespace grpo::testing {

// Nested JSON arrays of numbers (or one number) as a float64 tensor of the same shape.
inline at::Tensor json_to_tensor(const nlohmann::json& value) {
  if (value.is_number()) return at::scalar_tensor(value.get<double>(), at::kDouble);
  if (!value.empty() && !value[0].is_number()) {
    std::vector<at::Tensor> rows;
    for (const auto& row : value) rows.push_back(json_to_tensor(row));
    return at::stack(rows);
  }
  return at::tensor(value.get<std::vector<double>>(), at::kDouble);
}

// Nested JSON arrays of token ids as a long tensor of the same shape.
inline at::Tensor json_to_ids(const nlohmann::json& value) {
  if (!value.empty() && value[0].is_array()) {
    std::vector<at::Tensor> rows;
    for (const auto& row : value) rows.push_back(json_to_ids(row));
    return at::stack(rows);
  }
  return at::tensor(value.get<std::vector<int64_t>>(), at::kLong);
}

// max |got - want| in float64; a shape mismatch is a test failure (and an infinite difference).
inline double max_abs_diff(const at::Tensor& got, const at::Tensor& want) {
  EXPECT_EQ(got.sizes(), want.sizes());
  if (got.sizes() != want.sizes()) return 1e30;
  if (got.numel() == 0) return 0;
  return (got.to(at::kDouble) - want.to(at::kDouble)).abs().max().item<double>();
}

}  // namespace grpo::testing
