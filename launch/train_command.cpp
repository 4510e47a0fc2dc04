// `grpo sft`, `grpo train`, `grpo eval`, `grpo convert`: the training verbs. They run on every
// rank of an mpirun/srun job; a failure on any rank ends the whole job with that rank's error.

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/logging.h"
#include "core/run_lock.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/completion_marker.h"
#include "trainer/checkpoint.h"
#include "trainer/policy.h"
#include "dist/communicator.h"
#include "trainer/trainers.h"

namespace grpo {

#define RUN_DIRECTORY_HELP                                                                                  \
  "One run at a time per run directory (a lock; a second run is refused, naming the holder).\n"            \
  "--resume auto continues from the newest complete checkpoint; without it, a run directory that\n"        \
  "already holds checkpoints is refused, unless --overwrite, which deletes that run's checkpoints/,\n"     \
  "metrics.jsonl, samples.jsonl, tensorboard/ and final/ first."

const char* const kSftUsage =
    "grpo sft --config FILE [--resume auto|none|PATH] [--overwrite] [key.path=value ...]\n"
    "mpirun -np N grpo sft --config FILE\n\n"
    "Supervised fine-tuning on data.train_path's worked solutions (cold start, distillation).\n"
    "Writes <trainer.run_dir>/{config.yaml, metrics.jsonl, tensorboard/, checkpoints/, final/}.\n" RUN_DIRECTORY_HELP;
const char* const kTrainUsage =
    "grpo train --config FILE [--resume auto|none|PATH] [--overwrite] [key.path=value ...]\n"
    "mpirun -np N grpo train --config FILE\n\n"
    "GRPO on data.train_path's prompts with reward.functions. Writes <trainer.run_dir>/{config.yaml,\n"
    "metrics.jsonl, tensorboard/, samples.jsonl, checkpoints/, final/}.\n" RUN_DIRECTORY_HELP;
const char* const kEvalUsage =
    "grpo eval --config FILE [key.path=value ...]\n"
    "grpo eval --config configs/eval/r1.yaml model.path=DIR\n\n"
    "pass@1 over eval.samples samples (temperature eval.temperature, top-p eval.top_p), pass@k and\n"
    "cons@k on each of eval.datasets (or data.eval_path alone), each set judged by its reward set\n"
    "(math, code in the sandbox, plugins, reward models); prints a table with a row per dataset and\n"
    "writes eval.output (default <run_dir>/eval.json) atomically; exits 0 only when it is written.";
const char* const kConvertUsage =
    "grpo convert --checkpoint DIR --output DIR\n\n"
    "Exports a checkpoint (checkpoints/step-N) as a Hugging Face directory: config.json,\n"
    "model.safetensors, tokenizer.json. The checkpoint is verified against its manifest first.";

namespace {

Config with_resume(const Arguments& args, Config config) {
  if (auto resume = args.value("--resume")) config.checkpoint.resume = *resume;
  return config;
}

bool starts_afresh(const Config& config) {
  return config.checkpoint.resume.empty() || config.checkpoint.resume == "none";
}

// Rank 0's part of claim_run_directory: the lock, then whether a fresh start would mix with an
// earlier run. Returns the exit code (0: go on) after printing the one-line reason.
int lock_and_check(const std::string& verb, const Config& config, bool overwrite, std::unique_ptr<RunLock>* lock) {
  // A run that cannot start leaves no run directory behind, and taking the lock would create it.
  if (StatusOr<std::string> placed = placement(config.model.device); !placed) {
    fmt::print(stderr, "grpo {}: {}\n", verb, placed.status().message());
    return kExitFailure;
  }
  const std::string& dir = config.trainer.run_dir;
  StatusOr<std::unique_ptr<RunLock>> locked = RunLock::acquire(dir);
  if (!locked) {
    fmt::print(stderr, "grpo {}: {}\n", verb, locked.status().message());
    return kExitFailure;
  }
  *lock = std::move(locked).value();
  const std::vector<int64_t> steps = checkpoint_steps(dir + "/checkpoints");
  if (!starts_afresh(config) || steps.empty()) return kExitOk;
  if (!overwrite) {
    fmt::print(stderr,
               "grpo {}: trainer.run_dir '{}' already holds checkpoints of an earlier run (newest step-{}): pass "
               "--resume auto to continue it, choose another trainer.run_dir, or pass --overwrite to discard it\n",
               verb, dir, steps.back());
    return kExitUsage;
  }
  for (const char* name : {"checkpoints", "metrics.jsonl", "samples.jsonl", "tensorboard", "final"}) {
    std::error_code ec;
    std::filesystem::remove_all(dir + "/" + name, ec);
    if (ec) {
      fmt::print(stderr, "grpo {}: --overwrite: cannot remove '{}/{}': {}\n", verb, dir, name, ec.message());
      return kExitFailure;
    }
  }
  fmt::print(stderr, "grpo {}: --overwrite: removed the earlier run's checkpoints (newest step-{}) and logs from '{}'\n",
             verb, steps.back(), dir);
  return kExitOk;
}

// Every rank takes part, so a refused run ends on all of them with the same exit code, promptly,
// and none is left waiting in a collective. Rank 0 holds the lock (one holder per job is enough:
// every job has a rank 0).
int claim_run_directory(const std::string& verb, const Config& config, bool overwrite, std::unique_ptr<RunLock>* lock) {
  if (overwrite && !starts_afresh(config))
    throw UsageError(fmt::format("--overwrite starts afresh and cannot be combined with --resume {}",
                                 config.checkpoint.resume));
  Communicator& comm = world();
  int code = kExitOk;
  if (comm.rank() == 0) {
    try {
      code = lock_and_check(verb, config, overwrite, lock);
    } catch (const std::exception& e) {
      fmt::print(stderr, "grpo {}: {}\n", verb, e.what());
      code = kExitFailure;
    }
  }
  std::vector<double> agreed{static_cast<double>(code)};
  comm.all_reduce_sum(agreed);
  return static_cast<int>(agreed[0]);
}

std::string eval_output_path(const Config& config) {
  return config.eval.output.empty() ? config.trainer.run_dir + "/eval.json" : config.eval.output;
}

// A run that starts may stop early: the run directory must not keep saying an earlier run finished.
// An eval that shares a training run's directory leaves that run's record alone.
void remove_stale_completion_marker(const std::string& verb, const std::string& run_dir) {
  StatusOr<std::optional<CompletionRecord>> earlier = read_completion_marker(run_dir);
  if (earlier && earlier->has_value() && verb == "eval" && (*earlier)->verb != "eval") return;
  if (Status s = remove_completion_marker(run_dir); !s.is_ok()) throw std::runtime_error(s.message());
}

CompletionRecord training_record(const std::string& verb, const Config& config, const RunSummary& s) {
  CompletionRecord record;
  record.verb = verb;
  record.seconds = s.seconds;
  record.outputs = {{"run_dir", config.trainer.run_dir}, {"final", config.trainer.run_dir + "/final"}};
  record.metrics = nlohmann::json(s.last_metrics);
  record.metrics["first_step"] = s.first_step;
  record.metrics["last_step"] = s.last_step;
  return record;
}

CompletionRecord eval_record(const Config& config, const std::vector<EvalSummary>& results) {
  CompletionRecord record;
  record.verb = "eval";
  record.outputs = {{"run_dir", config.trainer.run_dir}, {"output", eval_output_path(config)}};
  const int64_t k = config.eval.samples;
  for (const EvalSummary& r : results) {
    record.seconds += r.seconds;
    record.metrics[r.name + "/pass@1"] = r.pass_at_1;
    record.metrics[fmt::format("{}/pass@{}", r.name, k)] = r.pass_at_k;
    record.metrics[fmt::format("{}/cons@{}", r.name, k)] = r.cons_at_k;
    record.metrics[r.name + "/format"] = r.format_ok;
    record.metrics[r.name + "/problems"] = r.problems;
  }
  return record;
}

// Written by rank 0 once every rank has finished (a rank that failed aborts the job before this).
void mark_complete(const std::string& run_dir, const CompletionRecord& record) {
  world().barrier();
  if (world().rank() != 0) return;
  if (record.verb == "eval") {
    StatusOr<std::optional<CompletionRecord>> earlier = read_completion_marker(run_dir);
    if (earlier && earlier->has_value() && (*earlier)->verb != "eval") {
      log_info("{} holds the completion record of a {} run; eval leaves it as it is", run_dir, (*earlier)->verb);
      return;
    }
  }
  if (Status s = write_completion_marker(run_dir, record); !s.is_ok()) throw std::runtime_error(s.message());
}

}  // namespace

int run_training_verb(const std::string& verb, const Arguments& args, const Config& loaded) {
  const Config config = with_resume(args, loaded);
  set_collective_timeout(config.trainer.collective_timeout_s);
  std::unique_ptr<RunLock> lock;  // held until the run has ended, however it ends
  if (verb == "sft" || verb == "train") {
    if (const int refused = claim_run_directory(verb, config, args.has_flag("--overwrite"), &lock)) {
      shutdown_world();
      return refused;
    }
  }
  try {
    if (world().rank() == 0) remove_stale_completion_marker(verb, config.trainer.run_dir);
    if (verb == "sft" || verb == "train") {
      const RunSummary s = verb == "sft" ? run_sft(config) : run_grpo(config);
      mark_complete(config.trainer.run_dir, training_record(verb, config, s));
      if (world().rank() == 0)
        fmt::print("{} finished: steps {} -> {} in {:.1f} s; run directory {}\n", verb, s.first_step, s.last_step,
                   s.seconds, config.trainer.run_dir);
    } else {
      const std::vector<EvalSummary> results = run_eval(config);
      mark_complete(config.trainer.run_dir, eval_record(config, results));
      if (world().rank() == 0) {
        const int64_t k = config.eval.samples;
        fmt::print("model {}\n", config.model.path);
        // Every column is a key of the set's entry in the results JSON (docs/training.md).
        fmt::print("{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n", "dataset", "problems", "pass@1",
                   fmt::format("pass@{}", k), fmt::format("cons@{}", k), "format", "tokens", "errors", "seconds");
        double seconds = 0;
        for (const EvalSummary& s : results) {
          fmt::print("{:<20} {:>8} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.1f} {:>8} {:>8.1f}\n", s.name, s.problems,
                     s.pass_at_1, s.pass_at_k, s.cons_at_k, s.format_ok, s.mean_response_tokens, s.reward_errors,
                     s.seconds);
          seconds += s.seconds;
        }
        fmt::print("{} samples per problem in {:.1f} s; results in {}\n", k, seconds, eval_output_path(config));
      }
    }
  } catch (const std::exception& e) {
    // One failing rank must not leave the others waiting in a collective: end the whole job.
    log_error("grpo {} failed: {}", verb, e.what());
    if (world().size() > 1) world().abort(1);
    shutdown_world();
    return 1;
  }
  shutdown_world();
  return 0;
}

int run_convert(const Arguments& args) {
  const auto start = std::chrono::steady_clock::now();
  const std::string checkpoint = args.required("--checkpoint");
  const std::string output = args.required("--output");
  StatusOr<CheckpointContents> c = load_checkpoint(checkpoint);
  if (!c) throw UsageError(c.status().message());
  if (Status s = remove_completion_marker(output); !s.is_ok()) throw std::runtime_error(s.message());
  std::filesystem::create_directories(output);
  if (c->layout) {
    // A stage-3 checkpoint: each parameter put together from the saved ranks' shards and written
    // as it is ready, so the whole model is never held at once.
    std::vector<SafetensorsStreamWriter::Entry> entries;
    for (const UnitLayout& unit : c->layout->units)
      for (size_t i = 0; i < unit.param_names.size(); ++i) entries.push_back({unit.param_names[i], at::kFloat, unit.shapes[i]});
    SafetensorsStreamWriter writer(output + "/model.safetensors", entries);
    for (size_t u = 0; u < c->layout->units.size(); ++u) {
      const UnitLayout& unit = c->layout->units[u];
      for (size_t i = 0; i < unit.param_names.size(); ++i) {
        const at::Tensor whole = read_flat_range(*c->layout, c->shards, "master", u, unit.offsets[i],
                                                 c10::multiply_integers(unit.shapes[i]));
        if (Status s = writer.write(unit.param_names[i], whole.view(unit.shapes[i])); !s.is_ok())
          throw std::runtime_error(s.message());
      }
    }
    if (Status s = writer.commit(); !s.is_ok()) throw std::runtime_error(s.message());
  } else if (Status s = write_safetensors(output + "/model.safetensors", c->model); !s.is_ok()) {
    throw std::runtime_error(s.message());
  }
  for (const char* name : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
    const auto it = c->files.find(name);
    if (it == c->files.end()) continue;
    std::ofstream(output + "/" + name) << it->second;
  }
  CompletionRecord record;
  record.verb = "convert";
  record.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  record.outputs = {{"output", output}};
  record.metrics = {{"step", c->step}};
  if (Status s = write_completion_marker(output, record); !s.is_ok()) throw std::runtime_error(s.message());
  fmt::print("exported {} (step {}) to {}\n", checkpoint, c->step, output);
  return 0;
}

}  // namespace grpo
