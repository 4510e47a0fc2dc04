#include "launch/cli.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <torch/version.h>

#include "core/config.h"
#include "core/cpu_info.h"
#include "core/logging.h"
#include "core/version.h"
#include "launch/commands.h"
#include "dist/communicator.h"
#include "kernels/cuda_kernels.h"
#include "trainer/reward_model_reward.h"
#include "trainer/toy_policy.h"

namespace grpo {
namespace {

struct Command {
  std::string summary;
  std::string usage;
  std::vector<std::string> allowed_flags;   // --name without a value
  std::vector<std::string> value_options;   // --name VALUE (repeatable)
  std::function<int(const Arguments&)> run;
};

bool listed(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

Arguments parse_arguments(int argc, char** argv, int first, const Command& command, const std::string& verb) {
  Arguments args;
  for (int i = first; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      args.help = true;
    } else if (arg == "--config") {
      if (i + 1 >= argc) throw UsageError("--config needs a file path");
      args.config_path = argv[++i];
    } else if (arg.rfind("--config=", 0) == 0) {
      args.config_path = arg.substr(9);
    } else if (arg.rfind("--", 0) == 0) {
      const auto equals = arg.find('=');
      const std::string name = arg.substr(0, equals);
      if (listed(command.value_options, name)) {
        if (equals != std::string::npos) {
          args.values[name].push_back(arg.substr(equals + 1));
        } else {
          if (i + 1 >= argc) throw UsageError(fmt::format("{} needs a value", name));
          args.values[name].push_back(argv[++i]);
        }
      } else if (listed(command.allowed_flags, arg)) {
        args.flags.push_back(arg);
      } else {
        throw UsageError(fmt::format("unknown option '{}' for 'grpo {}'", arg, verb));
      }
    } else if (arg.find('=') != std::string::npos) {
      args.overrides.push_back(arg);
    } else {
      throw UsageError(fmt::format("unexpected argument '{}' (overrides are written key.path=value)", arg));
    }
  }
  return args;
}

Config load_config_or_throw(const Arguments& args) {
  if (!args.config_path) throw UsageError("--config FILE is required");
  StatusOr<Config> config = load_config(*args.config_path, args.overrides);
  if (!config) throw UsageError(config.status().message());
  return std::move(config).value();
}

int run_config(const Arguments& args) {
  if (args.has_flag("--reference")) {
    fmt::print("{}", config_reference_markdown());
    return kExitOk;
  }
  fmt::print("{}", config_to_yaml(load_config_or_throw(args)));
  return kExitOk;
}

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  if (MPI_Get_library_version(text, &length) != MPI_SUCCESS) return "unknown";
  std::string version(text, static_cast<size_t>(length));
  if (const auto newline = version.find_first_of("\r\n,"); newline != std::string::npos) version.resize(newline);
  return version;
}

int run_version(const Arguments&) {
  fmt::print("grpo-cpp {}\n", kVersion);
  fmt::print("LibTorch {}.{}.{}\n", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH);
  fmt::print("CUDA: {}\n", kBuiltWithCuda ? (at::hasCUDA() ? "built, device available" : "built, no device")
                                          : "not built (CPU LibTorch)");
  fmt::print("CUDA kernels: {}\n", !cuda_kernels_built()     ? "not compiled (no CUDA compiler)"
                                   : cuda_kernels_enabled() ? "compiled, on (GRPO_CUDA_KERNELS=1)"
                                                            : "compiled, off (GRPO_CUDA_KERNELS=1 turns them on)");
  fmt::print("NCCL: {}\n", nccl_build_summary());
  fmt::print("MPI: {}\n", mpi_library_version());
  const TorchParallelism torch = probe_torch_parallelism();
  fmt::print("intra-op threads: {} (LibTorch {} backend)\n", torch.intra_op_threads, torch.backend);
  const BlasInfo blas = probe_blas();
  fmt::print("BLAS: {}\n", blas.config.empty() ? blas.library : blas.config);
  fmt::print("BLAS core: {}\n", blas.core.empty() ? "unknown" : blas.core);
  fmt::print("BLAS threads: {}{}\n", blas.threads > 0 ? std::to_string(blas.threads) : "unknown",
             blas.threading.empty() ? "" : " (" + blas.threading + ")");
  fmt::print("BLAS library file: {}\n", blas.provider.empty() ? "none loaded (sgemm_ not found)" : blas.provider);
  const CpuFeatures cpu = probe_cpu_features();
  fmt::print("CPU: {}, AVX2 {}, AVX-512 {}\n", cpu.model_name, cpu.avx2 ? "yes" : "no", cpu.avx512 ? "yes" : "no");
  if (const auto warning = generic_blas_core_warning(blas, cpu)) fmt::print("warning: {}\n", *warning);
  return kExitOk;
}

int run_toy(const Arguments& args) {
  const Config config = load_config_or_throw(args);
  if (config.model.path != "builtin:tabular")
    throw UsageError(fmt::format("model.path: 'grpo toy' trains only the built-in tabular policy; set "
                                 "model.path: builtin:tabular (got '{}')",
                                 config.model.path));
  configure_logging(launcher_rank(), LogSettings{config.logging.level, config.logging.all_ranks});
  at::set_num_threads(config.trainer.threads > 0 ? static_cast<int>(config.trainer.threads) : 1);

  log_info("toy GRPO: {} steps, {} prompts x G={} per step", config.trainer.steps, config.trainer.prompts_per_step,
           config.grpo.group_size);
  const auto history = train_toy_policy(config, ToyTaskOptions{}, [&](const ToyStepMetrics& m) {
    if (m.step % config.logging.every_steps == 0 || m.step == config.trainer.steps) {
      log_info("step {:>4}/{} reward {:.3f} exact {:.3f} loss {:+.4f} clip {:.3f} kl {:.4f} |g| {:.3f} lr {:.2e}",
               m.step, config.trainer.steps, m.reward_mean, m.exact_match, m.loss, m.clip_frac, m.kl_mean,
               m.grad_norm, m.lr);
    }
  });
  const ToyStepMetrics& first = history.front();
  const ToyStepMetrics& last = history.back();
  fmt::print("toy GRPO: reward {:.3f} -> {:.3f}, exact match {:.3f} -> {:.3f} over {} steps\n", first.reward_mean,
             last.reward_mean, first.exact_match, last.exact_match, history.size());
  return kExitOk;
}

const std::map<std::string, Command>& commands() {
  static const std::map<std::string, Command> table = {
      {"config",
       {"Print the resolved configuration, or the reference of every key",
        "grpo config --config FILE [key.path=value ...]\n"
        "grpo config --reference\n\n"
        "Reads FILE, applies the overrides and prints the resolved configuration as YAML.\n"
        "--reference prints every key with its type, default and meaning (docs/configuration.md).",
        {"--reference"},
        {},
        run_config}},
      {"toy",
       {"Train the built-in tabular policy with GRPO (the smallest end-to-end run)",
        "grpo toy --config FILE [key.path=value ...]\n\n"
        "Trains a tabular policy to emit hidden target strings from a reward alone, using the\n"
        "config's grpo, optimizer, rollout.temperature and trainer sections. See configs/demo/toy.yaml.",
        {},
        {},
        run_toy}},
      {"generate",
       {"Sample completions from a Hugging Face model (JSON lines out)", kGenerateUsage, {"--chat"},
        {"--model", "--tokenizer", "--prompt", "--prompt-ids", "--input", "--template", "--samples", "--max-new-tokens",
         "--temperature", "--top-p", "--top-k", "--min-p", "--seed", "--stop", "--dtype"},
        run_generate}},
      {"sft",
       {"Supervised fine-tuning (cold start, distillation) on worked solutions", kSftUsage, {"--overwrite"}, {"--resume"},
        [](const Arguments& args) { return run_training_verb("sft", args, load_config_or_throw(args)); }}},
      {"train",
       {"GRPO training with rule-based rewards (run under mpirun for several ranks)", kTrainUsage, {"--overwrite"}, {"--resume"},
        [](const Arguments& args) { return run_training_verb("train", args, load_config_or_throw(args)); }}},
      {"eval",
       {"pass@1 over k samples, pass@k and cons@k on a held-out set", kEvalUsage, {}, {},
        [](const Arguments& args) { return run_training_verb("eval", args, load_config_or_throw(args)); }}},
      {"sample",
       {"Rejection sampling: k samples per prompt, scored and filtered into an SFT set", kSampleUsage, {"--overwrite"},
        {},
        [](const Arguments& args) { return run_sample(args, load_config_or_throw(args)); }}},
      {"convert",
       {"Export a checkpoint as a Hugging Face directory", kConvertUsage, {}, {"--checkpoint", "--output"}, run_convert}},
      {"pipeline",
       {"Run a list of stages (sft, train, eval, sample, convert) that feed each other, with one summary",
        kPipelineUsage, {"--dry-run"}, {}, run_pipeline}},
      {"reward",
       {"Score completions offline with the configured rewards (JSON lines in and out)", kRewardUsage, {},
        {"--input", "--output"},
        [](const Arguments& args) { return run_reward(args, load_config_or_throw(args)); }}},
      {"tokenize",
       {"Token ids of strings with a Hugging Face tokenizer (JSON lines in and out)", kTokenizeUsage, {"--special"},
        {"--tokenizer", "--input", "--field"},
        run_tokenize}},
      {"version",
       {"Print the versions, whether CUDA/NCCL are usable, and the BLAS and threads CPU math runs on",
        "grpo version",
        {},
        {},
        run_version}},
  };
  return table;
}

void print_main_help(std::FILE* out) {
  fmt::print(out, "grpo {}: a native C++ GRPO trainer for reasoning LLMs\n\n", kVersion);
  fmt::print(out, "Usage: grpo <command> [--config FILE] [key.path=value ...]\n\nCommands:\n");
  for (const auto& [name, command] : commands()) fmt::print(out, "  {:<9} {}\n", name, command.summary);
  fmt::print(out, "\nRun 'grpo <command> --help' for a command's options. Exit codes: 0 ok, 1 failure, "
                  "2 usage or config error.\n");
}

}  // namespace

// A mistyped GRPO_CUDA_KERNELS would otherwise leave the kernels silently off for the whole run.
static void check_cuda_kernels_setting() {
  const std::string problem = cuda_kernels_setting_problem();
  if (!problem.empty()) throw UsageError(problem);
  const char* value = std::getenv("GRPO_CUDA_KERNELS");
  if (value != nullptr && std::string(value) == "1" && !cuda_kernels_built())
    log_warn("GRPO_CUDA_KERNELS=1, but this build has no CUDA kernels (nvcc was not found when it was configured): "
             "CUDA tensors take the ATen references");
}

int run_cli(int argc, char** argv) {
  register_model_rewards();  // rewards that run a model live above rewards/
  if (argc < 2) {
    print_main_help(stderr);
    return kExitUsage;
  }
  const std::string verb = argv[1];
  if (verb == "--help" || verb == "-h" || verb == "help") {
    print_main_help(stdout);
    return kExitOk;
  }
  if (verb == "--version") return run_version(Arguments{});
  const auto it = commands().find(verb);
  if (it == commands().end()) {
    fmt::print(stderr, "grpo: unknown command '{}'\n\n", verb);
    print_main_help(stderr);
    return kExitUsage;
  }
  const Command& command = it->second;
  try {
    const Arguments args = parse_arguments(argc, argv, 2, command, verb);
    if (args.help) {
      fmt::print("Usage: {}\n", command.usage);
      return kExitOk;
    }
    check_cuda_kernels_setting();
    return command.run(args);
  } catch (const UsageError& e) {
    fmt::print(stderr, "grpo {}: {}\n", verb, e.what());
    return kExitUsage;
  } catch (const std::exception& e) {
    log_error("grpo {} failed: {}", verb, e.what());
    return kExitFailure;
  }
}

}  // namespace grpo
