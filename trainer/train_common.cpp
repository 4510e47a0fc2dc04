#include "trainer/train_common.h"

#include <algorithm>
#include <filesystem>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/atomic_file.h"
#include "core/cpu_info.h"
#include "core/logging.h"
#include "rewards/reward_set.h"
#include "trainer/checkpoint.h"

namespace grpo {
namespace {

std::string format_duration(double seconds) {
  const auto s = static_cast<int64_t>(seconds);
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

// Resuming with another model, data set, group size or learning rate is allowed (a deliberate
// change of schedule, a moved data file) but must not pass unnoticed.
void warn_about_changed_essentials(const CheckpointContents& checkpoint, const std::string& from, const Config& now) {
  const auto saved = checkpoint.files.find("config.yaml");
  if (saved == checkpoint.files.end()) return;
  StatusOr<Config> before = parse_config(saved->second, from + "/config.yaml");
  if (!before) {
    log_warn("cannot compare the configuration with {}/config.yaml: {}", from, before.status().message());
    return;
  }
  for (const std::string& change : changed_essentials(*before, now))
    log_warn("resuming with a changed setting (checkpoint -> now) {}", change);
}

// The moments of a whole (stage 0-2) checkpoint as tensors by parameter name (no copies).
TensorMap moments_by_name(const CheckpointContents& checkpoint, const std::vector<std::string>& names,
                          const std::string& kind, const std::string& from) {
  TensorMap out;
  for (const std::string& name : names) {
    const auto it = checkpoint.optimizer.find(kind + "." + name);
    if (it == checkpoint.optimizer.end()) throw std::runtime_error(fmt::format("{}: tensor '{}.{}' missing", from, kind, name));
    out[name] = it->second;
  }
  return out;
}

// Stages 0-2 resuming: the checkpoint's parameters into the (whole) model, its whole moments out.
// A stage-3 checkpoint's shards are put together parameter by parameter.
void read_whole_state(TrainingRun& run, const CheckpointContents& checkpoint, const std::string& from,
                      std::vector<at::Tensor>* exp_avg, std::vector<at::Tensor>* exp_avg_sq) {
  at::NoGradGuard no_grad;
  std::map<std::string, std::pair<size_t, size_t>> where;  // name -> (unit, index in unit) of a sharded checkpoint
  if (checkpoint.layout)
    for (size_t u = 0; u < checkpoint.layout->units.size(); ++u)
      for (size_t i = 0; i < checkpoint.layout->units[u].param_names.size(); ++i)
        where[checkpoint.layout->units[u].param_names[i]] = {u, i};
  auto whole = [&](const std::string& kind, const std::string& name) -> at::Tensor {
    if (!checkpoint.layout) {
      const TensorMap& map = kind == "master" ? checkpoint.model : checkpoint.optimizer;
      const auto it = map.find(kind == "master" ? name : kind + "." + name);
      if (it == map.end()) throw std::runtime_error(fmt::format("{}: tensor '{}' missing", from, name));
      return it->second;
    }
    const auto it = where.find(name);
    if (it == where.end()) throw std::runtime_error(fmt::format("{}: tensor '{}' missing", from, name));
    const UnitLayout& unit = checkpoint.layout->units[it->second.first];
    const size_t i = it->second.second;
    return read_flat_range(*checkpoint.layout, checkpoint.shards, kind, it->second.first, unit.offsets[i],
                           c10::multiply_integers(unit.shapes[i]))
        .view(unit.shapes[i]);
  };
  for (size_t i = 0; i < run.params.size(); ++i) {
    const std::string& name = run.param_names[i];
    run.params[i].copy_(whole("master", name));
    exp_avg->push_back(whole("exp_avg", name));
    exp_avg_sq->push_back(whole("exp_avg_sq", name));
  }
}

// Stage 3: the policy sharded straight from where its values are (a checkpoint's shards, saved on
// any rank count; a whole checkpoint; the mapped model files; the builtin model's parameters). No
// rank materializes more than its shards.
std::unique_ptr<ShardedDecoder> shard_policy(TrainingRun& run, const CheckpointContents* checkpoint, const std::string& from) {
  const ShardOptions options = shard_options(run.config.trainer);
  std::unique_ptr<ShardedDecoder> sharded;
  if (checkpoint == nullptr) {
    const at::ScalarType model_dtype = run.params.front().scalar_type();
    sharded = run.policy.mapped_weights.empty()
                  ? shard(run.policy.model, *run.comm, options)
                  : shard(run.policy.model, *run.comm, options, slices_of(run.policy.mapped_weights, model_dtype));
  } else if (checkpoint->layout) {
    ShardLayout expected;
    for (DecoderUnit& unit : run.policy.model->units())
      expected.units.push_back(make_unit_layout(unit.name, unit.param_names, unit.shapes, 1));
    if (Status s = check_same_units(*checkpoint->layout, expected); !s.is_ok())
      throw std::runtime_error(fmt::format("{}: {}", from, s.message()));
    sharded = shard(run.policy.model, *run.comm, options, slices_of(*checkpoint->layout, checkpoint->shards, "master"));
  } else {
    if (Status s = check_weights(run.policy.model, checkpoint->model); !s.is_ok())
      throw std::runtime_error(fmt::format("{}: {}", from, s.message()));
    sharded = shard(run.policy.model, *run.comm, options, slices_of(checkpoint->model));
  }
  run.policy.mapped_weights.clear();  // unmaps the model files
  return sharded;
}

// Stage 3: this rank's slices of the checkpoint's moments, straight into the optimizer.
void load_sharded_moments(TrainingRun& run, const CheckpointContents& checkpoint, const std::string& from) {
  const int64_t steps = checkpoint.state.value("optimizer_steps", checkpoint.step);
  if (checkpoint.layout) {
    run.optimizer->load_shard_state(steps, slices_of(*checkpoint.layout, checkpoint.shards, "exp_avg"),
                                    slices_of(*checkpoint.layout, checkpoint.shards, "exp_avg_sq"));
    return;
  }
  const TensorMap avg = moments_by_name(checkpoint, run.param_names, "exp_avg", from);
  const TensorMap avg_sq = moments_by_name(checkpoint, run.param_names, "exp_avg_sq", from);
  run.optimizer->load_shard_state(steps, slices_of(avg), slices_of(avg_sq));
}

}  // namespace

std::unique_ptr<TrainingRun> start_training_run(const Config& config, const std::string& kind) {
  auto run = std::make_unique<TrainingRun>();
  run->config = config;
  run->comm = &world();
  Communicator& comm = *run->comm;
  configure_logging(comm.rank(), LogSettings{config.logging.level, config.logging.all_ranks});
  const int threads = config.trainer.threads > 0
                          ? static_cast<int>(config.trainer.threads)
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local_size());
  at::set_num_threads(threads);
  log_compute_setup(comm.rank());
  // Checked before the run directory exists, so a run that cannot start leaves nothing behind.
  if (StatusOr<std::string> placed = placement(config.model.device); !placed)
    throw std::runtime_error(placed.status().message());

  const std::string& dir = config.trainer.run_dir;
  if (comm.rank() == 0) {
    std::filesystem::create_directories(dir);
    if (Status s = write_file_atomic(dir + "/config.yaml", config_to_yaml(config)); !s.is_ok())
      throw std::runtime_error(s.message());
  }
  comm.barrier();

  const int zero_stage = static_cast<int>(config.trainer.zero_stage);
  // With trainer.rollout_ranks K, the job's last K ranks only generate (trainer/disaggregated.h).
  const bool rollout_role = config.trainer.rollout_ranks > 0 && comm.rank() >= comm.size() - config.trainer.rollout_ranks;
  // The dev set is read (and checked) before the model: a bad path fails at once. Rollout ranks do
  // not evaluate; the trainers do, with the weights they hold.
  if (!rollout_role) run->dev = DevEvaluation::from_config(config);
  // Stage 3 never materializes the model on a trainer: each copies only its shard out of the
  // mapped files. A rollout rank samples with the whole model.
  StatusOr<Policy> policy =
      load_policy(config.model, static_cast<uint64_t>(config.trainer.seed), /*deferred=*/zero_stage == 3 && !rollout_role);
  if (!policy) throw std::runtime_error(policy.status().message());
  run->policy = std::move(policy).value();
  if (run->dev) run->dev->check_prompt_lengths(run->policy);
  for (auto& item : run->policy.model->named_parameters()) {
    run->param_names.push_back(item.key());
    run->params.push_back(item.value());
  }
  // Gradients live where the parameters do: NCCL for CUDA when built, else MPI.
  const at::Device device = run->params.front().device();
  run->comm = &communicator_for(device);
  if (config.trainer.rollout_ranks > 0) {
    if (kind != "grpo")
      throw std::runtime_error(fmt::format("trainer.rollout_ranks: {} training has no rollout; set it to 0", kind));
    run->layout = std::make_unique<RolloutLayout>(split_layout(*run->comm, config.trainer.rollout_ranks));
    run->comm = run->layout->role.get();
  }
  if (zero_stage < 3 && config.trainer.param_dtype != DType::kFloat32)
    throw std::runtime_error("trainer.param_dtype: bfloat16 needs trainer.zero_stage 3 (stages 0-2 compute in model.dtype)");

  const std::string& resume = config.checkpoint.resume;
  std::optional<CheckpointContents> checkpoint;
  std::string from;
  if (resume == "auto") {
    std::vector<std::string> skipped;
    checkpoint = load_latest_checkpoint(dir + "/checkpoints", &skipped, &from);
    for (const std::string& why : skipped) log_warn("skipping checkpoint: {}", why);
  } else if (resume != "none" && !resume.empty()) {
    StatusOr<CheckpointContents> loaded = load_checkpoint(resume);
    if (!loaded) throw std::runtime_error("checkpoint.resume: " + loaded.status().message());
    checkpoint = std::move(loaded).value();
    from = resume;
  }
  if (checkpoint && checkpoint->state.value("kind", kind) != kind)
    throw std::runtime_error(fmt::format("{} is a {} checkpoint, not {}", from, checkpoint->state.value("kind", ""), kind));

  int64_t parameters = 0;
  for (const auto& [name, shape] : run->policy.model->parameter_shapes()) parameters += c10::multiply_integers(shape);
  if (run->layout)
    log_info("{} trainer rank(s) (0-{}) and {} rollout rank(s) ({}-{}), rollout.max_staleness {}",
             run->layout->trainer_ranks, run->layout->trainer_ranks - 1, run->layout->rollout_ranks,
             run->layout->trainer_ranks, comm.size() - 1, config.rollout.max_staleness);
  std::vector<at::Tensor> exp_avg, exp_avg_sq;
  if (rollout_role) {
    // A rollout rank holds the whole policy to sample with and no optimizer; the trainers send it
    // their weights after every update.
    if (checkpoint) read_whole_state(*run, *checkpoint, from, &exp_avg, &exp_avg_sq);
  } else if (zero_stage == 3) {
    run->sharded = shard_policy(*run, checkpoint ? &*checkpoint : nullptr, from);
    run->optimizer = std::make_unique<DistributedAdamW>(*run->sharded, config.optimizer, *run->comm);
  } else {
    // The checkpoint's whole parameters go into the model before it is wrapped; its moments go
    // through the optimizer below.
    if (checkpoint) read_whole_state(*run, *checkpoint, from, &exp_avg, &exp_avg_sq);
    if (config.trainer.activation_checkpointing)
      run->sharded = shard(run->policy.model, *run->comm, shard_options(config.trainer));
    run->optimizer = std::make_unique<DistributedAdamW>(run->params, config.optimizer, *run->comm, zero_stage);
  }
  if (!rollout_role)
    log_info("{} rank(s), model on {}, gradients over {}, ZeRO stage {} (optimizer state for {} of {} parameters here)",
             run->comm->size(), device.str(),
             device.is_cuda() && nccl_linked() ? "NCCL" : run->comm->size() > 1 ? "MPI" : "nothing (one rank)",
             config.trainer.zero_stage, run->optimizer->state_numel(), parameters);

  if (checkpoint) {
    if (zero_stage == 3 && !rollout_role) load_sharded_moments(*run, *checkpoint, from);
    else if (!rollout_role)
      run->optimizer->load_state(checkpoint->state.value("optimizer_steps", checkpoint->step), exp_avg, exp_avg_sq);
    run->step = checkpoint->step;
    run->resumed_state = checkpoint->state;
    log_info("resumed from {} at step {}", from, run->step);
    // A run that ended at its dev target stays ended, unless the target was raised since.
    const auto reached = checkpoint->state.find("dev_target_reached");
    if (reached != checkpoint->state.end() && config.eval.stop_at_pass_at_1 &&
        reached->get<double>() >= *config.eval.stop_at_pass_at_1) {
      run->finished = true;
      log_info("{} ended with dev pass@1 {:.3f}, at least eval.stop_at_pass_at_1 {}: nothing left to train", from,
               reached->get<double>(), *config.eval.stop_at_pass_at_1);
    }
    if (run->dev) run->dev->restore_streak(checkpoint->state.value("dev_target_streak", int64_t{0}));
    warn_about_changed_essentials(*checkpoint, from, config);
  }
  // The run continues from run->step: later checkpoints and log rows belong to another attempt.
  comm.barrier();  // every rank has read its checkpoint before any is renamed
  if (comm.rank() == 0) {
    StatusOr<std::vector<std::string>> set_aside = set_aside_checkpoints_after(dir + "/checkpoints", run->step);
    if (!set_aside) throw std::runtime_error(set_aside.status().message());
    for (const std::string& move : *set_aside) log_warn("set aside a checkpoint after step {}: {}", run->step, move);
    run->metrics = std::make_unique<MetricsWriter>(dir, run->step);
  }
  return run;
}

TrainingData load_training_data(const TrainingRun& run, const RewardSet* rewards) {
  const Config& config = run.config;
  StatusOr<Dataset> data = load_dataset(config.data.train_path, config.data);
  if (!data) throw std::runtime_error("data.train_path: " + data.status().message());
  if (rewards != nullptr) {
    ExampleChecks checks;
    checks.missing_field = [rewards](const nlohmann::json& fields) { return rewards->missing_field(fields); };
    checks.prompt_tokens = [&run](const std::string& prompt) {
      return static_cast<int64_t>(encode_prompt(run.policy, prompt).size());
    };
    checks.context_length = run.policy.model->options().max_position_embeddings;
    checks.max_new_tokens = config.rollout.max_new_tokens;
    checks.overlong = config.data.overlong_prompts;
    StatusOr<int64_t> dropped = check_examples(*data, checks, config.data);
    if (!dropped) throw std::runtime_error("data.train_path: " + dropped.status().message());
    if (*dropped > 0)
      log_warn("skipped {} prompts of {} too long for the model's context with rollout.max_new_tokens {} "
               "(data.overlong_prompts: skip)",
               *dropped, config.data.train_path, config.rollout.max_new_tokens);
  }
  if (data->examples.empty()) throw std::runtime_error("data.train_path: no examples");
  if (data->skipped_lines > 0) log_warn("skipped {} malformed lines of {}", data->skipped_lines, config.data.train_path);
  DataOrder order(static_cast<int64_t>(data->examples.size()), static_cast<uint64_t>(config.trainer.seed), config.data.shuffle);
  if (!run.resumed_state.is_null()) order.restore(run.resumed_state.at("data"));
  return {std::move(data).value(), std::move(order)};
}

void check_step_split(const TrainerConfig& trainer, int64_t rows_per_item, int64_t ranks, const std::string& role,
                      bool passes_matter) {
  const int64_t items = trainer.prompts_per_step;
  if (ranks <= 0) return;
  if (items < ranks)
    throw std::runtime_error(fmt::format(
        "trainer.prompts_per_step {} is fewer than the {} {} that share each step's prompts: every one needs at least "
        "one; set trainer.prompts_per_step to at least {} (or launch fewer ranks)", items, ranks, role, ranks));
  if (!passes_matter || trainer.zero_stage != 3) return;
  std::vector<int64_t> rows, passes;
  for (int64_t r = 0; r < ranks; ++r) {
    rows.push_back(rows_per_item * share_of(items, r, ranks).size());
    const int64_t micro = trainer.micro_batch_size > 0 ? std::min(trainer.micro_batch_size, rows.back()) : rows.back();
    passes.push_back((rows.back() + micro - 1) / micro);
  }
  if (*std::min_element(passes.begin(), passes.end()) == *std::max_element(passes.begin(), passes.end())) return;
  throw std::runtime_error(fmt::format(
      "trainer.zero_stage 3 needs the same number of micro-batches on every rank: trainer.prompts_per_step {}{} over "
      "{} {} gives them {} rows, which trainer.micro_batch_size {} splits into {} passes; choose a "
      "trainer.prompts_per_step that divides evenly over the {} (or a trainer.micro_batch_size that gives each the same "
      "number of passes)",
      items, rows_per_item > 1 ? fmt::format(" x grpo.group_size {}", rows_per_item) : std::string(), ranks, role,
      fmt::join(rows, ", "), trainer.micro_batch_size, fmt::join(passes, ", "), role));
}

void check_same_pass_count(TrainingRun& run, int64_t passes) {
  if (!run.sharded || !run.sharded->sharded()) return;
  const double p = static_cast<double>(passes);
  std::vector<double> sums{p, p * p};
  run.comm->all_reduce_sum(sums);
  // Every rank's count is equal exactly when ranks * sum of squares == (sum)^2.
  if (static_cast<double>(run.comm->size()) * sums[1] != sums[0] * sums[0])
    throw std::runtime_error(fmt::format(
        "trainer.zero_stage 3 needs the same number of micro-batches on every rank (this rank has {}): choose "
        "trainer.prompts_per_step (x grpo.group_size) and trainer.micro_batch_size so that every rank's rows split "
        "into as many passes", passes));
}

ShardOptions shard_options(const TrainerConfig& trainer) {
  ShardOptions options;
  options.shard_parameters = trainer.zero_stage == 3;
  options.param_dtype = trainer.param_dtype == DType::kBFloat16 ? at::kBFloat16 : at::kFloat;
  options.reduce_dtype = trainer.reduce_dtype == DType::kBFloat16 ? at::kBFloat16 : at::kFloat;
  options.activation_checkpointing = trainer.activation_checkpointing;
  if (trainer.prefetch != UnitPrefetch::kAuto) options.prefetch = trainer.prefetch == UnitPrefetch::kOn;
  return options;
}

void save_training_checkpoint(TrainingRun& run, const std::string& kind, const nlohmann::json& state) {
  CheckpointContents c;
  c.step = run.step;
  c.state = state;
  c.state["kind"] = kind;
  c.state["optimizer_steps"] = run.optimizer->steps_taken();
  DecoderOptions options = run.policy.model->options();
  c.files["config.json"] = decoder_config_json(options);
  c.files["tokenizer.json"] = run.policy.tokenizer_json;
  if (!run.policy.tokenizer_config_json.empty()) c.files["tokenizer_config.json"] = run.policy.tokenizer_config_json;
  c.files["config.yaml"] = config_to_yaml(run.config);
  const std::string checkpoints_dir = run.config.trainer.run_dir + "/checkpoints";
  if (run.sharded && run.sharded->sharded()) {
    // Stage 3: each rank writes its own fp32 master and moment shards; nothing is gathered.
    const ShardLayout& layout = run.sharded->layout();
    const std::vector<at::Tensor> masters = run.sharded->master_shards();
    TensorMap shard;
    for (size_t u = 0; u < layout.units.size(); ++u) {
      shard[shard_tensor_name("master", layout.units[u])] = masters[u].detach();
      shard[shard_tensor_name("exp_avg", layout.units[u])] = run.optimizer->exp_avg_shards()[u];
      shard[shard_tensor_name("exp_avg_sq", layout.units[u])] = run.optimizer->exp_avg_sq_shards()[u];
    }
    if (Status s = save_sharded_checkpoint(checkpoints_dir, c, layout, shard, *run.comm, run.config.checkpoint.keep_last);
        !s.is_ok())
      throw std::runtime_error(s.message());
    log_info("checkpoint step-{} written ({} shards)", run.step, run.comm->size());
    return;
  }
  std::vector<at::Tensor> exp_avg, exp_avg_sq;
  run.optimizer->gather_moments(&exp_avg, &exp_avg_sq);
  if (run.comm->rank() == 0) {
    for (size_t i = 0; i < run.params.size(); ++i) {
      c.model[run.param_names[i]] = run.params[i].detach();
      c.optimizer["exp_avg." + run.param_names[i]] = exp_avg[i];
      c.optimizer["exp_avg_sq." + run.param_names[i]] = exp_avg_sq[i];
    }
    if (Status s = save_checkpoint(checkpoints_dir, c, run.config.checkpoint.keep_last); !s.is_ok())
      throw std::runtime_error(s.message());
    log_info("checkpoint step-{} written", run.step);
  }
  run.comm->barrier();
}

bool should_stop(TrainingRun& run) {
  double stop = 0;
  if (run.comm->rank() == 0 && run.config.trainer.max_seconds > 0) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - run.started).count();
    stop = elapsed >= run.config.trainer.max_seconds ? 1.0 : 0.0;
  }
  std::vector<double> flag{stop};
  run.comm->all_reduce_sum(flag);
  return flag[0] > 0;
}

bool finish_step(TrainingRun& run, const std::string& kind, const nlohmann::json& state,
                 const std::map<std::string, double>& metrics, const std::vector<std::string>& console_keys,
                 double step_seconds) {
  const Config& config = run.config;
  std::map<std::string, double> dev;
  if (run.dev && run.dev->due(run.step)) {
    dev = run.dev->evaluate(run.policy, run.sharded.get(), *run.comm);
    log_info("dev eval at step {}: pass@1 {:.3f} | pass@k {:.3f} | cons@k {:.3f} | format {:.3f} | {:.1f} s", run.step,
             dev["dev/pass@1"], dev["dev/pass@k"], dev["dev/cons@k"], dev["dev/format"], dev["dev/seconds"]);
  }
  // Every rank holds the same reduced dev metrics, so every rank decides alike.
  const bool target_reached = !dev.empty() && run.dev->record(dev["dev/pass@1"]);
  if (run.metrics) {
    std::map<std::string, double> logged = metrics;
    logged.insert(dev.begin(), dev.end());
    if (run.sharded && run.sharded->sharded()) {
      // Stage 3's communication on rank 0, cumulative since the run (or its resume) started.
      logged["zero3_gather_s"] = run.sharded->collective_seconds().gather;
      logged["zero3_reduce_scatter_s"] = run.sharded->collective_seconds().reduce_scatter;
      if (run.sharded->prefetching()) {
        logged["zero3_prefetch_used"] = static_cast<double>(run.sharded->prefetch_counts().used);
        logged["zero3_prefetch_wasted"] = static_cast<double>(run.sharded->prefetch_counts().wasted);
      }
    }
    run.metrics->log(run.step, logged);
  }
  const bool last = run.step == config.trainer.steps;
  if (run.step % config.logging.every_steps == 0 || last)
    log_info("{}", progress_line(run, metrics, console_keys, step_seconds));
  const bool out_of_time = should_stop(run);
  const bool stop = out_of_time || target_reached;
  nlohmann::json saved_state = state;
  if (run.dev) saved_state["dev_target_streak"] = run.dev->streak();
  if (target_reached) {
    saved_state["dev_target_reached"] = dev["dev/pass@1"];
    run.finished = true;
  }
  if ((config.checkpoint.every_steps > 0 && run.step % config.checkpoint.every_steps == 0) || last || stop)
    save_training_checkpoint(run, kind, saved_state);
  if (target_reached)
    log_info("dev pass@1 {:.3f} reached eval.stop_at_pass_at_1 {} at step {} ({} evaluation(s) in a row): training "
             "ends here", dev["dev/pass@1"], *config.eval.stop_at_pass_at_1, run.step, run.dev->streak());
  else if (out_of_time)
    log_info("trainer.max_seconds reached after step {}", run.step);
  return stop;
}

std::string progress_line(const TrainingRun& run, const std::map<std::string, double>& metrics,
                          const std::vector<std::string>& keys, double step_seconds) {
  std::string line = fmt::format("step {}/{}", run.step, run.config.trainer.steps);
  for (const std::string& key : keys) {
    const auto it = metrics.find(key);
    if (it != metrics.end()) line += fmt::format(" | {} {:.4g}", key, it->second);
  }
  const double eta = step_seconds * static_cast<double>(run.config.trainer.steps - run.step);
  line += fmt::format(" | {:.2f} s/step | ETA {}", step_seconds, format_duration(eta));
  return line;
}

void export_final(TrainingRun& run) {
  const std::string dir = run.config.trainer.run_dir + "/final";
  if (run.sharded && run.sharded->sharded()) {
    // Stage 3: streamed unit by unit into rank 0's file; no rank holds the whole model.
    ShardedDecoder& model = *run.sharded;
    const at::ScalarType dtype = model.options().param_dtype;
    std::unique_ptr<SafetensorsStreamWriter> writer;
    if (run.comm->rank() == 0) {
      std::filesystem::create_directories(dir);
      std::vector<SafetensorsStreamWriter::Entry> entries;
      for (const UnitLayout& unit : model.layout().units)
        for (size_t i = 0; i < unit.param_names.size(); ++i) entries.push_back({unit.param_names[i], dtype, unit.shapes[i]});
      writer = std::make_unique<SafetensorsStreamWriter>(dir + "/model.safetensors", entries);
    }
    Status status = Status::ok();
    model.visit_whole_units(dtype, [&](const UnitLayout& unit, const std::vector<at::Tensor>& params) {
      for (size_t i = 0; i < params.size() && status.is_ok(); ++i) status = writer->write(unit.param_names[i], params[i]);
    });
    if (run.comm->rank() == 0) {
      if (status.is_ok()) status = writer->commit();
      DecoderOptions options = run.policy.model->options();
      options.torch_dtype = dtype == at::kBFloat16 ? "bfloat16" : "float32";
      if (status.is_ok()) status = write_file_atomic(dir + "/config.json", decoder_config_json(options));
      if (status.is_ok()) status = export_tokenizer(run.policy, dir);
      if (!status.is_ok()) throw std::runtime_error(status.message());
      log_info("exported the policy to {}", dir);
    }
    run.comm->barrier();
    return;
  }
  const FullParameters whole(run.sharded.get());
  if (run.comm->rank() == 0) {
    std::filesystem::create_directories(dir);
    if (Status s = export_policy(run.policy, dir); !s.is_ok()) throw std::runtime_error(s.message());
    log_info("exported the policy to {}", dir);
  }
  run.comm->barrier();
}

}  // namespace grpo
