#pragma once
// The run configuration: YAML parsed once, at the edge, into these typed structs.
// Every field's default is the initializer below; docs/configuration.md is generated from the
// schema in config.cpp (`grpo config --reference`) and a test keeps the two identical.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/grpo_options.h"
#include "core/logging.h"
#include "core/status.h"

namespace grpo {

enum class DType { kFloat32, kBFloat16 };
enum class DeviceKind { kCpu, kCuda };
// Stage 3: whether the next unit's all-gather starts before the current unit computes.
enum class UnitPrefetch { kAuto, kOn, kOff };

struct ModelConfig {
  std::string path;  // A Hugging Face checkpoint directory, or `builtin:NAME`; needed by model verbs.
  DType dtype = DType::kFloat32;
  DeviceKind device = DeviceKind::kCpu;
  std::string chat_template;  // "" = prompts are used as written; else qwen3, deepseek_v3, r1_zero, tokenizer
};

enum class OverlongPrompts { kError, kSkip };

struct DataConfig {
  std::string train_path;  // JSONL file, or builtin:addition?... (trainer/data.h)
  std::string eval_path;   // held-out set, same forms
  std::string dev_path;    // evaluated during training (eval.every_steps); "" = eval_path
  std::string prompt_field = "prompt";
  std::string answer_field = "answer";
  std::string response_field = "response";  // worked solution, for SFT
  bool shuffle = true;
  bool skip_malformed = false;  // skip and count malformed lines instead of failing
  // A prompt whose tokens plus rollout.max_new_tokens exceed the model's context: stop at load
  // naming file:line (error), or drop it and count (skip).
  OverlongPrompts overlong_prompts = OverlongPrompts::kError;
};

struct RolloutConfig {
  int64_t max_new_tokens = 1024;
  double temperature = 1.0;
  double top_p = 1.0;
  int64_t top_k = 0;  // 0 disables top-k.
  double min_p = 0.0;
  std::vector<std::string> stop;  // Stop strings, in addition to the tokenizer's EOS.
  int64_t max_concurrent_prompts = 0;  // prompts decoded at once (continuous batching); 0: training all, eval 32
  int64_t readback_interval = 8;       // decode steps between reads of the device state
  int64_t max_staleness = 0;  // with trainer.rollout_ranks: policy versions a trained batch may lag (0 = on-policy)
};

enum class RewardErrorPolicy { kFail, kScore };

// One reward function of the weighted sum.
struct RewardFunctionConfig {
  std::string name;              // a registered reward: math, format, language, length, code, plugin, subprocess, reward_model
  std::string label;             // name in metrics and output; defaults to `name`
  double weight = 1.0;
  nlohmann::json options = nlohmann::json::object();  // the reward's own options (docs/rewards.md)
};

struct RewardConfig {
  std::vector<RewardFunctionConfig> functions;
  int64_t threads = 0;           // scoring threads; 0 = available cores
  double timeout_s = 10.0;
  RewardErrorPolicy on_error = RewardErrorPolicy::kFail;
  double error_score = 0.0;  // Score given to a failed sample when on_error = score.
};

enum class GrpoPreset { kR1, kVerl, kTrl, kDapo, kDrGrpo, kGspo };

struct GrpoConfig {
  GrpoPreset preset = GrpoPreset::kR1;
  int64_t group_size = 8;         // G: completions sampled per prompt.
  int64_t updates_per_batch = 1;  // mu: policy updates per rollout batch.
  bool filter_zero_std_groups = false;  // drop groups whose rewards are all equal (DAPO dynamic sampling)
  int64_t max_generation_rounds = 1;    // with the filter: sample more prompts until the step is full (refill)
  std::optional<double> max_logp_mismatch;  // stop when mean |sampling logp - trainer logp| exceeds it
  AdvantageOptions advantage;
  PolicyLossOptions policy_loss;
  KlOptions kl;
  AggregationOptions aggregation;
  RolloutCorrectionOptions rollout_correction;
};

enum class LrSchedule { kConstant, kCosine };

struct OptimizerConfig {
  double lr = 1e-6;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t warmup_steps = 0;
  LrSchedule schedule = LrSchedule::kConstant;
  double min_lr_ratio = 0.0;   // Cosine decays to lr * min_lr_ratio.
  double max_grad_norm = 1.0;  // 0 disables clipping.
};

// Stops a run that cannot learn (trainer.guards.*); 0 turns a guard off.
struct GuardConfig {
  int64_t zero_variance_steps = 0;         // every group's rewards flat for this many steps in a row
  double max_reward_error_fraction = 0.5;  // of reward evaluations over the window
  double max_skipped_update_fraction = 0.5;  // of optimizer updates over the window
  int64_t window_steps = 10;               // recent steps the fractions are taken over
};

struct TrainerConfig {
  int64_t steps = 100;
  int64_t prompts_per_step = 16;
  int64_t seed = 42;
  std::string run_dir = "runs/grpo";
  int64_t threads = 0;  // Intra-op threads per rank; 0 = cores / local ranks.
  bool mask_truncated = false;  // GRPO: completions cut at max_new_tokens get no gradient
  double max_seconds = 0;       // stop after this much training time (0 = no limit)
  int64_t micro_batch_size = 0;  // rows per forward/backward; gradients accumulate (0 = the rank's whole batch)
  int64_t zero_stage = 0;       // 0 whole state on every rank, 1 optimizer split, 2 gradients too, 3 parameters too
  DType param_dtype = DType::kFloat32;   // stage 3: dtype passes compute in (the fp32 master shard holds the truth)
  DType reduce_dtype = DType::kFloat32;  // stage 3: dtype gradients are reduce-scattered in
  UnitPrefetch prefetch = UnitPrefetch::kAuto;  // stage 3: auto = on for CUDA parameters, off on CPU
  bool activation_checkpointing = false; // recompute each decoder layer in backward (implied at stage 3)
  double collective_timeout_s = 600;  // a rank waiting longer in one collective aborts the job (0 = no limit)
  int64_t rollout_ranks = 0;  // GRPO: the last K ranks only generate and score (0 = every rank does both)
  GuardConfig guards;
};

struct CheckpointConfig {
  int64_t every_steps = 0;  // 0 = only at the end of training.
  int64_t keep_last = 3;
  std::string resume = "none";  // none (start afresh), auto (newest complete checkpoint in run_dir), or a path
};

// How a set's answers are grouped for cons@k (docs/training.md, "Correct, pass@k and cons@k").
enum class EvalVote { kAuto, kMath, kCode, kText };

// One held-out set of `grpo eval`; empty fields fall back to data.* and reward.*.
struct EvalDatasetConfig {
  std::string name;          // row name in the table and the JSON
  std::string path;          // JSONL file, or builtin:addition?...
  std::string prompt_field;  // "" = data.prompt_field
  std::string answer_field;  // "" = data.answer_field
  std::string prompt_template;  // "" = the prompt field as written; else text with {field} placeholders
  int64_t skip = 0;             // records dropped from the front (MBPP's test split starts at task 11)
  int64_t limit = 0;            // records kept after skip; 0 = all
  std::vector<RewardFunctionConfig> rewards;  // empty = reward.functions (empty too: the math reward)
  std::vector<std::string> correct_rewards;   // labels that decide correctness; empty = every math and code reward
  double correct_threshold = 1.0;  // a deciding reward without a `correct` component must score at least this
  EvalVote vote = EvalVote::kAuto;  // cons@k grouping; auto: math with a math reward, code with a code reward, else text
};

struct EvalConfig {
  std::vector<EvalDatasetConfig> datasets;  // empty = the one set data.eval_path
  int64_t samples = 4;          // k completions per problem
  double temperature = 0.6;
  double top_p = 0.95;
  int64_t max_new_tokens = 0;   // 0 = rollout.max_new_tokens
  int64_t max_problems = 0;     // 0 = the whole eval set
  std::string output;           // JSON results; "" = <run_dir>/eval.json
  // During `sft` and `train`: data.dev_path evaluated every N steps (0 = never), and training ends
  // once stop_consecutive evaluations in a row reach pass@1 stop_at_pass_at_1 (null = never).
  int64_t every_steps = 0;
  std::optional<double> stop_at_pass_at_1;
  int64_t stop_consecutive = 1;
};

// `grpo sample`: k samples per prompt from model.path, scored by reward.functions, filtered into an
// SFT set (rejection sampling, distillation data). A sample is kept when it passes every filter.
struct SampleConfig {
  std::string dataset;               // prompts: JSONL or builtin:addition?...; "" = data.train_path
  int64_t samples_per_prompt = 4;    // k
  int64_t max_prompts = 0;           // the first N prompts; 0 = all
  int64_t prompts_per_part = 32;     // prompts sampled and committed together: the unit of resume
  std::optional<double> min_reward;  // keep a sample whose weighted reward total is >= this; null = any
  std::vector<std::string> required_components;  // "label.component" that must be 1, e.g. math.correct
  bool require_format = false;       // strict <think>...</think><answer>...</answer>
  std::string language;              // the chain of thought's language (en, zh, ...); "" = not filtered
  double min_language_share = 0.9;   // with `language`: least share of its words in that language
  int64_t max_tokens = 0;            // longest completion kept, in tokens; 0 = no limit
  bool drop_truncated = true;        // drop completions cut at rollout.max_new_tokens
  int64_t ngram_size = 4;            // n of the repetition filter (token n-grams)
  double max_repeated_ngram_share = 1.0;  // drop above this share of repeated n-grams; 1 = off
  bool deduplicate = true;           // drop exact repeats of a completion kept for the same prompt
  int64_t max_kept_per_prompt = 0;   // 0 = every sample that passes
  std::string output;                // SFT JSONL; "" = <trainer.run_dir>/samples.jsonl
};

// On-policy distillation in `grpo train`: the student (model.path) samples, a frozen teacher scores
// each sampled token, and the reverse KL between them is a per-token advantage (docs/training.md).
struct DistillConfig {
  std::string teacher_path;  // HF directory or builtin:NAME sharing the student's vocabulary; "" = off
  DistillationOptions options;
  bool enabled() const { return !teacher_path.empty(); }
};

struct LoggingConfig {
  LogLevel level = LogLevel::kInfo;
  bool all_ranks = false;
  int64_t every_steps = 1;
};

struct Config {
  ModelConfig model;
  DataConfig data;
  RolloutConfig rollout;
  RewardConfig reward;
  GrpoConfig grpo;
  OptimizerConfig optimizer;
  TrainerConfig trainer;
  CheckpointConfig checkpoint;
  EvalConfig eval;
  SampleConfig sample;
  DistillConfig distill;
  LoggingConfig logging;
};

// Sets every GRPO option to the named recipe's value (docs/algorithms.md lists them);
// `preset`, `group_size` and `updates_per_batch` are left as they are.
void apply_grpo_preset(GrpoPreset preset, GrpoConfig& grpo);

// Parses YAML text. `source_name` names the text in errors (usually the file path).
// `overrides` are `key.path=value` strings that win over the text. On error the Status has one
// line per problem, each naming where (file:line or the override) and the key path.
StatusOr<Config> parse_config(const std::string& yaml_text, const std::string& source_name,
                              const std::vector<std::string>& overrides = {});
StatusOr<Config> load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// The fully resolved configuration as YAML that parse_config reads back to the same Config.
std::string config_to_yaml(const Config& config);

// Markdown reference of every key: type, default, allowed values, meaning.
std::string config_reference_markdown();

}  // namespace grpo
