#pragma once
// The code reward: runs a completion's program against the sample's tests in the sandbox.
// Python (python3) or C++ (g++) programs; HumanEval-style (`test` + `entry_point`), MBPP-style
// (`test_list` asserts, `test_setup_code`) and stdin/stdout tests (`tests`: [{input, output}]).
// Score = share of tests passed, or 1/0 with all_or_nothing.

#include <string>

#include "rewards/reward.h"
#include "rewards/sandbox.h"

namespace grpo {

StatusOr<std::unique_ptr<Reward>> create_code_reward(const nlohmann::json& options);

// The program in a completion: the last ```python/```py/```cpp/```c++ block (or the last plain
// ``` block), else the text after </think>, else the whole completion.
std::string extract_code(const std::string& completion);

struct CodeTestReport {
  int passed = 0;
  int total = 0;
  std::string detail;  // the first failure, briefly
};

// Runs python `code` against one sample's tests (HumanEval, MBPP or stdin/stdout fields).
StatusOr<CodeTestReport> run_python_tests(const std::string& code, const nlohmann::json& fields,
                                          const SandboxLimits& limits);
// Compiles C++ `code` and runs it on stdin/stdout tests.
StatusOr<CodeTestReport> run_cpp_tests(const std::string& code, const nlohmann::json& fields,
                                       const SandboxLimits& limits);

}  // namespace grpo
