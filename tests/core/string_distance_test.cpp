#include "core/string_distance.h"

#include <gtest/gtest.h>

namespace grpo {
namespace {

TEST(StringDistance, EditDistanceCountsEdits) {
  EXPECT_EQ(edit_distance("", ""), 0u);
  EXPECT_EQ(edit_distance("beta", "beta"), 0u);
  EXPECT_EQ(edit_distance("bta", "beta"), 1u);
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
}

TEST(StringDistance, ClosestNameIgnoresFarCandidates) {
  EXPECT_EQ(closest_name("grpup_size", {"group_size", "updates_per_batch"}), "group_size");
  EXPECT_EQ(closest_name("zzzzzz", {"model", "data"}), "");
}

}  // namespace
}  // namespace grpo
