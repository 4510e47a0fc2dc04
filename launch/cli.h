#pragma once
// The `grpo` command line. Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.

namespace grpo {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;

int run_cli(int argc, char** argv);

}  // namespace grpo
