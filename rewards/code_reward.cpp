#include "rewards/code_reward.h"

#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

namespace grpo {

extern const char* const kPythonTestHarness;  // rewards/code_harness.py, embedded by CMake

namespace {

constexpr const char* kPython = "/usr/bin/python3";
constexpr const char* kCompiler = "/usr/bin/g++";

std::string trim_trailing(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

// Output equality for stdin/stdout tests: line by line, trailing whitespace ignored.
bool same_output(const std::string& got, const std::string& want) {
  auto lines = [](const std::string& text) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) out.push_back(trim_trailing(line));
    while (!out.empty() && out.back().empty()) out.pop_back();
    return out;
  };
  return lines(got) == lines(want);
}

std::string indent_of_first_line(const std::string& code) {
  std::istringstream in(code);
  for (std::string line; std::getline(in, line);) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    return line.substr(0, line.find_first_not_of(" \t"));
  }
  return "";
}

StatusOr<CodeTestReport> run_stdio_tests(const std::vector<std::string>& argv, const std::string& dir,
                                         const nlohmann::json& tests, const SandboxLimits& limits) {
  CodeTestReport report;
  for (const auto& test : tests) {
    ++report.total;
    const std::string input = test.value("input", "");
    const std::string want = test.value("output", "");
    StatusOr<SandboxResult> run = run_sandboxed(argv, input, dir, limits);
    if (!run) return run.status();
    if (run->ok() && same_output(run->stdout_text, want)) {
      ++report.passed;
    } else if (report.detail.empty()) {
      report.detail = run->timed_out ? "timed out" : run->output_limit ? "output limit" :
                      !run->ok() ? fmt::format("exit {} signal {}: {}", run->exit_code, run->signal, run->stderr_text.substr(0, 200))
                                 : fmt::format("test {}: wrong output", report.total);
    }
  }
  return report;
}

class CodeReward final : public Reward {
 public:
  std::string language = "python";
  bool all_or_nothing = false;
  SandboxLimits limits;

  RewardScore score(const RewardSample& sample) const override {
    const std::string code = extract_code(sample.completion);
    StatusOr<CodeTestReport> report = language == "cpp" ? run_cpp_tests(code, sample.fields, limits)
                                                        : run_python_tests(code, sample.fields, limits);
    if (!report) throw std::runtime_error(report.status().message());
    if (report->total == 0) throw std::runtime_error("the sample has no tests (test, test_list or tests)");
    RewardScore result;
    const double share = static_cast<double>(report->passed) / report->total;
    result.score = all_or_nothing ? (report->passed == report->total ? 1.0 : 0.0) : share;
    result.components["passed"] = report->passed;
    result.components["tests"] = report->total;
    result.reason = fmt::format("{}/{} tests passed{}", report->passed, report->total,
                                report->detail.empty() ? "" : "; " + report->detail);
    return result;
  }

  // Python samples carry HumanEval's test + entry_point, MBPP's test_list or stdin/stdout tests;
  // C++ samples only stdin/stdout tests.
  std::vector<std::string> missing_fields(const nlohmann::json& fields) const override {
    auto non_empty_array = [&](const char* key) {
      return fields.contains(key) && fields[key].is_array() && !fields[key].empty();
    };
    auto non_empty_string = [&](const char* key) {
      return fields.contains(key) && fields[key].is_string() && !fields[key].get<std::string>().empty();
    };
    if (language == "cpp") return non_empty_array("tests") ? std::vector<std::string>{} : std::vector<std::string>{"tests"};
    if ((non_empty_string("test") && non_empty_string("entry_point")) || non_empty_array("test_list") || non_empty_array("tests"))
      return {};
    return {"test + entry_point, test_list or tests"};
  }
};

std::string random_token() {
  std::random_device device;
  std::string token;
  for (int i = 0; i < 4; ++i) token += fmt::format("{:08x}", device());
  return token;
}

// The harness's "<token> <passed> <total>" line; anything the program printed cannot carry the
// token, which it never saw.
std::optional<std::pair<int, int>> harness_verdict(const std::string& stdout_text, const std::string& token) {
  std::istringstream lines(stdout_text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string first;
    int passed = 0, total = 0;
    if (words >> first >> passed >> total && first == token) return std::make_pair(passed, total);
  }
  return std::nullopt;
}

}  // namespace

std::string extract_code(const std::string& completion) {
  std::string best;
  bool best_tagged = false;
  for (size_t pos = 0; (pos = completion.find("```", pos)) != std::string::npos;) {
    const size_t line_end = completion.find('\n', pos);
    if (line_end == std::string::npos) break;
    const std::string tag = trim_trailing(completion.substr(pos + 3, line_end - pos - 3));
    const size_t close = completion.find("```", line_end);
    if (close == std::string::npos) break;
    const bool tagged = tag == "python" || tag == "py" || tag == "python3" || tag == "cpp" || tag == "c++";
    if (tagged || !best_tagged) {
      best = completion.substr(line_end + 1, close - line_end - 1);
      best_tagged = tagged;
    }
    pos = close + 3;
  }
  if (!best.empty()) return best;
  const size_t think_end = completion.find("</think>");
  return think_end == std::string::npos ? completion : completion.substr(think_end + 8);
}

StatusOr<CodeTestReport> run_python_tests(const std::string& code, const nlohmann::json& fields,
                                          const SandboxLimits& limits) {
  SandboxDirectory dir(limits.max_scratch_bytes);
  CodeTestReport report;
  const bool humaneval = fields.contains("test") && fields.contains("entry_point");
  if (humaneval || fields.contains("test_list")) {
    // The tests and the token travel only on the harness's stdin (rewards/code_harness.py says
    // why the program under test can neither see nor forge them).
    nlohmann::json spec;
    const std::string token = random_token();
    spec["token"] = token;
    std::string program = code;
    if (humaneval) {
      // HumanEval: prompt + completion, or the completion alone when it defines the function.
      const std::string prompt = fields.value("prompt", "");
      program = indent_of_first_line(code).empty() ? prompt + "\n" + code : prompt + code;
      spec["kind"] = "humaneval";
      spec["prompt"] = prompt;
      spec["test"] = fields["test"];
      spec["entry_point"] = fields["entry_point"];
    } else {
      spec["kind"] = "mbpp";
      spec["setup"] = fields.value("test_setup_code", "");
      spec["tests"] = fields["test_list"];
    }
    if (Status s = dir.write_file("solution.py", program); !s.is_ok()) return s;
    if (Status s = dir.write_file("harness.py", kPythonTestHarness); !s.is_ok()) return s;
    StatusOr<SandboxResult> run = run_sandboxed({kPython, "harness.py"}, spec.dump(), dir.path(), limits);
    if (!run) return run.status();
    report.total = humaneval ? 1 : static_cast<int>(fields["test_list"].size());
    const std::optional<std::pair<int, int>> verdict = harness_verdict(run->stdout_text, token);
    if (verdict && !run->timed_out && verdict->second == report.total) report.passed = std::min(verdict->first, report.total);
    const std::string& err = run->stderr_text;
    report.detail = run->timed_out ? "timed out" : !verdict ? "the harness reported no verdict"
                                                            : err.substr(err.size() > 300 ? err.size() - 300 : 0);
    return report;
  }
  if (fields.contains("tests") && fields["tests"].is_array()) {
    if (Status s = dir.write_file("main.py", code); !s.is_ok()) return s;
    return run_stdio_tests({kPython, "main.py"}, dir.path(), fields["tests"], limits);
  }
  return report;
}

StatusOr<CodeTestReport> run_cpp_tests(const std::string& code, const nlohmann::json& fields,
                                       const SandboxLimits& limits) {
  if (!fields.contains("tests") || !fields["tests"].is_array()) return CodeTestReport{};
  SandboxDirectory dir(limits.max_scratch_bytes);
  if (Status s = dir.write_file("main.cpp", code); !s.is_ok()) return s;
  SandboxLimits compile = limits;
  compile.wall_seconds = std::max(limits.wall_seconds, 60.0);
  compile.cpu_seconds = std::max<int64_t>(limits.cpu_seconds, 60);
  compile.memory_bytes = std::max<int64_t>(limits.memory_bytes, 2LL << 30);
  StatusOr<SandboxResult> built =
      run_sandboxed({kCompiler, "-O2", "-std=c++17", "-o", "main", "main.cpp"}, "", dir.path(), compile);
  if (!built) return built.status();
  if (!built->ok()) {
    CodeTestReport report;
    report.total = static_cast<int>(fields["tests"].size());
    report.detail = "compilation failed: " + built->stderr_text.substr(0, 300);
    return report;
  }
  return run_stdio_tests({dir.path() + "/main"}, dir.path(), fields["tests"], limits);
}

StatusOr<std::unique_ptr<Reward>> create_code_reward(const nlohmann::json& options) {
  RewardOptions o("code", options);
  auto r = std::make_unique<CodeReward>();
  r->language = o.string("language", "python");
  r->all_or_nothing = o.boolean("all_or_nothing", false);
  r->limits.wall_seconds = o.number("timeout_s", 10.0);
  r->limits.cpu_seconds = o.integer("cpu_s", 10);
  r->limits.memory_bytes = o.integer("memory_mb", 1024) << 20;
  r->limits.max_processes = o.integer("max_processes", 64);
  r->limits.max_output_bytes = o.integer("max_output_kb", 1024) << 10;
  r->limits.max_scratch_bytes = o.integer("scratch_mb", 64) << 20;
  if (Status s = o.finish(); !s.is_ok()) return s;
  if (r->language != "python" && r->language != "cpp")
    return Status::error(fmt::format("reward 'code': option 'language' must be python or cpp, got '{}'", r->language));
  if (Status s = sandbox_available(); !s.is_ok()) return Status::error("reward 'code': " + s.message());
  return std::unique_ptr<Reward>(std::move(r));
}

}  // namespace grpo
