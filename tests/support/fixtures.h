#pragma once
// Where the tests find the peers' fixtures and data sets: an environment variable names another
// directory or file of the same schema (the held-out sets), else the copy under ../shared.

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace grpo::testing {

// `env`'s value when set, else GRPO_SHARED_DIR/`shared_relative`.
inline std::string shared_path(const char* env, const std::string& shared_relative) {
  if (const char* path = std::getenv(env)) return path;
  return std::string(GRPO_SHARED_DIR) + "/" + shared_relative;
}

// The entries of `dir` that `keep` accepts, sorted by path; none when `dir` is not a directory.
inline std::vector<std::string> sorted_entries(const std::string& dir,
                                               const std::function<bool(const std::filesystem::directory_entry&)>& keep) {
  std::vector<std::string> paths;
  if (!std::filesystem::is_directory(dir)) return paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    if (keep(entry)) paths.push_back(entry.path().string());
  std::sort(paths.begin(), paths.end());
  return paths;
}

// A parameterized case's name from its fixture path: the directory's name, or the file's name
// without its extension, with anything but letters and digits turned into '_'.
inline std::string fixture_case_name(const ::testing::TestParamInfo<std::string>& info) {
  const std::filesystem::path path(info.param);
  std::string name = std::filesystem::is_directory(path) ? path.filename().string() : path.stem().string();
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
}

}  // namespace grpo::testing
