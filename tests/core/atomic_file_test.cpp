#include "core/atomic_file.h"

#include <gtest/gtest.h>

#include <filesystem>

namespace grpo {
namespace {

namespace fs = std::filesystem;

TEST(AtomicFile, WritesReplacesAndLeavesNoTemporaryFile) {
  const fs::path dir = fs::temp_directory_path() / ("grpo_atomic_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "a.txt").string();
  ASSERT_TRUE(write_file_atomic(path, "first").is_ok());
  ASSERT_TRUE(write_file_atomic(path, std::string("second\0x", 8)).is_ok());
  StatusOr<std::string> contents = read_file(path);
  ASSERT_TRUE(contents.is_ok());
  EXPECT_EQ(*contents, std::string("second\0x", 8));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
  fs::remove_all(dir);
}

TEST(AtomicFile, ErrorsNameThePath) {
  const Status status = write_file_atomic("/nonexistent-dir/x.txt", "x");
  ASSERT_FALSE(status.is_ok());
  EXPECT_NE(status.message().find("/nonexistent-dir/x.txt"), std::string::npos);
  EXPECT_FALSE(read_file("/nonexistent-dir/y.txt").is_ok());
}

}  // namespace
}  // namespace grpo
