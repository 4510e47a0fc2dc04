#pragma once
// Shared pieces of the `grpo` verbs: parsed arguments and the usage error (exit code 2).

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace grpo {

// A mistake in how grpo was called or in what it was given: reported with exit code 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Arguments {
  std::optional<std::string> config_path;
  std::vector<std::string> overrides;                       // key.path=value
  std::vector<std::string> flags;                           // --name without a value
  std::map<std::string, std::vector<std::string>> values;   // --name VALUE, in order given
  bool help = false;

  bool has_flag(const std::string& name) const;
  std::optional<std::string> value(const std::string& name) const;  // the last one given
  std::string required(const std::string& name) const;              // or UsageError
  double number(const std::string& name, double fallback) const;    // or UsageError if not a number
  int64_t integer(const std::string& name, int64_t fallback) const;
};

struct Config;

extern const char* const kGenerateUsage;
extern const char* const kRewardUsage;
extern const char* const kSftUsage;
extern const char* const kTrainUsage;
extern const char* const kEvalUsage;
extern const char* const kConvertUsage;
extern const char* const kTokenizeUsage;
extern const char* const kSampleUsage;
extern const char* const kPipelineUsage;
int run_generate(const Arguments& args);
int run_tokenize(const Arguments& args);
int run_reward(const Arguments& args, const Config& config);
int run_training_verb(const std::string& verb, const Arguments& args, const Config& config);
int run_convert(const Arguments& args);
int run_sample(const Arguments& args, const Config& config);
int run_pipeline(const Arguments& args);

}  // namespace grpo
