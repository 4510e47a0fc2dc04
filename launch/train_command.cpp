// `grpo sft`, `grpo train`, `grpo eval`, `grpo convert`: the training verbs. They run on every
// rank of an mpirun/srun job; a failure on any rank ends the whole job with that rank's error.

#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/logging.h"
#include "launch/commands.h"
#include "trainer/checkpoint.h"
#include "dist/communicator.h"
#include "trainer/trainers.h"

namespace grpo {

const char* const kSftUsage =
    "grpo sft --config FILE [--resume auto|none|PATH] [key.path=value ...]\n"
    "mpirun -np N grpo sft --config FILE\n\n"
    "Supervised fine-tuning on data.train_path's worked solutions (cold start, distillation).\n"
    "Writes <trainer.run_dir>/{config.yaml, metrics.jsonl, tensorboard/, checkpoints/, final/}.";
const char* const kTrainUsage =
    "grpo train --config FILE [--resume auto|none|PATH] [key.path=value ...]\n"
    "mpirun -np N grpo train --config FILE\n\n"
    "GRPO on data.train_path's prompts with reward.functions. Writes <trainer.run_dir>/{config.yaml,\n"
    "metrics.jsonl, tensorboard/, samples.jsonl, checkpoints/, final/}.";
const char* const kEvalUsage =
    "grpo eval --config FILE [key.path=value ...]\n\n"
    "pass@1 over eval.samples samples (temperature eval.temperature, top-p eval.top_p), pass@k and\n"
    "cons@k on each of eval.datasets (or data.eval_path alone); prints a table with a row per dataset\n"
    "and writes eval.output (default <run_dir>/eval.json).";
const char* const kConvertUsage =
    "grpo convert --checkpoint DIR --output DIR\n\n"
    "Exports a checkpoint (checkpoints/step-N) as a Hugging Face directory: config.json,\n"
    "model.safetensors, tokenizer.json. The checkpoint is verified against its manifest first.";

namespace {

Config with_resume(const Arguments& args, Config config) {
  if (auto resume = args.value("--resume")) config.checkpoint.resume = *resume;
  return config;
}

}  // namespace

int run_training_verb(const std::string& verb, const Arguments& args, const Config& loaded) {
  const Config config = with_resume(args, loaded);
  set_collective_timeout(config.trainer.collective_timeout_s);
  try {
    if (verb == "sft" || verb == "train") {
      const RunSummary s = verb == "sft" ? run_sft(config) : run_grpo(config);
      if (world().rank() == 0)
        fmt::print("{} finished: steps {} -> {} in {:.1f} s; run directory {}\n", verb, s.first_step, s.last_step,
                   s.seconds, config.trainer.run_dir);
    } else {
      const std::vector<EvalSummary> results = run_eval(config);
      if (world().rank() == 0) {
        const int64_t k = config.eval.samples;
        fmt::print("model {}\n", config.model.path);
        fmt::print("{:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}\n", "dataset", "problems", "pass@1", fmt::format("pass@{}", k),
                   fmt::format("cons@{}", k), "format", "tokens");
        double seconds = 0;
        for (const EvalSummary& s : results) {
          fmt::print("{:<20} {:>8} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.3f} {:>8.1f}\n", s.name, s.problems, s.pass_at_1,
                     s.pass_at_k, s.cons_at_k, s.format_ok, s.mean_response_tokens);
          seconds += s.seconds;
        }
        fmt::print("{} samples per problem in {:.1f} s; results in {}\n", k, seconds,
                   config.eval.output.empty() ? config.trainer.run_dir + "/eval.json" : config.eval.output);
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
  const std::string checkpoint = args.required("--checkpoint");
  const std::string output = args.required("--output");
  StatusOr<CheckpointContents> c = load_checkpoint(checkpoint);
  if (!c) throw UsageError(c.status().message());
  std::filesystem::create_directories(output);
  if (Status s = write_safetensors(output + "/model.safetensors", c->model); !s.is_ok()) throw std::runtime_error(s.message());
  for (const char* name : {"config.json", "tokenizer.json", "tokenizer_config.json"}) {
    const auto it = c->files.find(name);
    if (it == c->files.end()) continue;
    std::ofstream(output + "/" + name) << it->second;
  }
  fmt::print("exported {} (step {}) to {}\n", checkpoint, c->step, output);
  return 0;
}

}  // namespace grpo
