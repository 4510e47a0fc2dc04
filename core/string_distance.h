#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace grpo {

// Levenshtein distance (insert, delete, substitute each cost 1).
size_t edit_distance(std::string_view a, std::string_view b);

// The candidate nearest to `name`, or "" when none is close enough to be a plausible typo.
std::string closest_name(std::string_view name, const std::vector<std::string>& candidates);

}  // namespace grpo
