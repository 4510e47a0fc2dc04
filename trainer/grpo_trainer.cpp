// One GRPO step, top to bottom (../shared/DESIGN.md): this rank's prompts -> G samples each ->
// rewards (with dynamic sampling, more rounds until enough groups carry signal) -> group
// advantages -> old/reference log-probs, a distillation teacher's per-token advantages, rollout
// correction -> mu updates with grpo_loss, gradients summed over ranks, global-norm clipping,
// AdamW -> metrics (the sampler/trainer mismatch among them, with its bound) reduced over ranks
// -> checkpoint.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include "core/logging.h"
#include "core/thread_pool.h"
#include "rewards/reward_set.h"
#include "rollout/engine.h"
#include "trainer/data.h"
#include "trainer/dynamic_sampling.h"
#include "trainer/frozen_model.h"
#include "trainer/grpo_loss.h"
#include "trainer/guards.h"
#include "trainer/train_common.h"
#include "trainer/trainers.h"

namespace grpo {
namespace {

// The names every rank will reduce: rank 0's reward components, broadcast as bytes.
std::vector<std::string> agree_on_names(Communicator& comm, const std::vector<SampleScores>& scores) {
  std::string joined;
  if (comm.rank() == 0) {
    std::set<std::string> names;
    for (const SampleScores& s : scores)
      for (const auto& entry : s.components) names.insert(entry.first);
    for (const std::string& name : names) joined += name + "\n";
  }
  at::Tensor length = at::full({1}, static_cast<int64_t>(joined.size()), at::kLong);
  comm.broadcast(length, 0);
  at::Tensor bytes = at::zeros({length.item<int64_t>()}, at::kInt);
  for (size_t i = 0; i < joined.size(); ++i) bytes[static_cast<int64_t>(i)] = static_cast<int>(static_cast<unsigned char>(joined[i]));
  comm.broadcast(bytes, 0);
  std::vector<std::string> out;
  std::string current;
  const int* data = bytes.data_ptr<int>();
  for (int64_t i = 0; i < bytes.numel(); ++i) {
    if (data[i] == '\n') {
      out.push_back(current);
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  return out;
}

// Stops the run (every rank alike: the inputs are reduced metrics) when a trainer.guards.* limit trips.
// With distillation every token has an advantage whatever the rewards, so flat groups are no alarm.
void check_guards(TrainingGuards& guards, int64_t step, const std::map<std::string, double>& metrics,
                  double evaluations, int64_t updates, bool distill) {
  StepHealth health;
  health.zero_std_group_fraction = distill ? 0.0 : metrics.at("zero_std_groups");
  health.reward_evaluations = std::llround(evaluations);
  health.reward_errors = std::llround(metrics.at("reward_errors") * evaluations);
  health.updates = updates;
  health.skipped_updates = std::llround(metrics.at("skipped_updates"));
  if (Status s = guards.observe(step, health); !s.is_ok()) throw std::runtime_error(s.message());
}

// One round of a step's sampling on this rank: prompts, their G completions each, and scores.
struct SampledRound {
  std::vector<const Example*> examples;  // one per group
  RolloutBatch batch;
  std::vector<RewardSample> samples;
  std::vector<SampleScores> scores;
  double rollout_seconds = 0, reward_seconds = 0;
};

// The sampling seed key of prompt i of a step's round: round 0 keeps the plain step * P + i, later
// rounds (dynamic sampling) get keys of their own.
uint64_t prompt_key(int64_t step, int64_t round, int64_t prompts_per_step, int64_t i) {
  return (static_cast<uint64_t>(round) << 40) ^ static_cast<uint64_t>(step * prompts_per_step + i);
}

// Which of a round's prompts_per_step groups (over every rank) have rewards that are not all equal.
std::vector<bool> global_signal(Communicator& comm, const std::vector<SampleScores>& scores, int64_t prompts_per_step,
                                int64_t begin, int64_t g) {
  std::vector<float> totals;
  for (const SampleScores& s : scores) totals.push_back(static_cast<float>(s.total));
  const std::vector<bool> local = groups_with_signal(totals, g);
  std::vector<double> flags(static_cast<size_t>(prompts_per_step), 0.0);
  for (size_t j = 0; j < local.size(); ++j) flags[static_cast<size_t>(begin) + j] = local[j] ? 1.0 : 0.0;
  comm.all_reduce_sum(flags);
  std::vector<bool> out;
  for (double f : flags) out.push_back(f > 0.5);
  return out;
}

// The kept groups that this rank sampled (prompts [begin, end) of each round), as one round.
SampledRound keep_groups(const std::vector<SampledRound>& rounds, const std::vector<GroupRef>& kept, int64_t begin,
                         int64_t end, int64_t g, int64_t pad_id) {
  SampledRound out;
  std::vector<const RolloutBatch*> batches;
  for (const SampledRound& r : rounds) batches.push_back(&r.batch);
  std::vector<std::pair<size_t, int64_t>> rows;
  for (const GroupRef& ref : kept) {
    if (ref.prompt < begin || ref.prompt >= end) continue;
    const SampledRound& r = rounds[static_cast<size_t>(ref.round)];
    const int64_t local = ref.prompt - begin;
    out.examples.push_back(r.examples[static_cast<size_t>(local)]);
    for (int64_t row = local * g; row < (local + 1) * g; ++row) {
      rows.emplace_back(static_cast<size_t>(ref.round), row);
      out.samples.push_back(r.samples[static_cast<size_t>(row)]);
      out.scores.push_back(r.scores[static_cast<size_t>(row)]);
    }
  }
  out.batch = gather_rows(batches, rows, pad_id);
  out.batch.group_size = g;
  return out;
}

// Adds a micro-batch's mismatch sums to the step's.
void add_mismatch(std::optional<LogpMismatch>& total, const LogpMismatch& part) {
  if (!total) {
    total = part;
    return;
  }
  total->tokens = total->tokens + part.tokens;
  total->abs_diff_sum = total->abs_diff_sum + part.abs_diff_sum;
  total->abs_diff_max = at::maximum(total->abs_diff_max, part.abs_diff_max);
  total->kl_sum = total->kl_sum + part.kl_sum;
}

// The step's sampler/trainer mismatch over every rank's valid tokens.
std::map<std::string, double> mismatch_metrics(Communicator& comm, const LogpMismatch& local) {
  std::vector<double> sums{local.tokens.item<double>(), local.abs_diff_sum.item<double>(), local.kl_sum.item<double>()};
  comm.all_reduce_sum(sums);
  const at::Tensor maxima = comm.all_gather(local.abs_diff_max.to(at::kCPU, at::kDouble).reshape({1}));
  const double tokens = std::max(sums[0], 1.0);
  return {{"mismatch/logp_abs_mean", sums[1] / tokens},
          {"mismatch/logp_abs_max", maxima.max().item<double>()},
          {"mismatch/kl", sums[2] / tokens}};
}

// grpo.max_logp_mismatch: every rank holds the same reduced metrics, so every rank stops together.
void check_mismatch_bound(const GrpoConfig& grpo, const std::map<std::string, double>& metrics, int64_t step) {
  if (!grpo.max_logp_mismatch) return;
  const double mean = metrics.at("mismatch/logp_abs_mean");
  if (mean <= *grpo.max_logp_mismatch) return;
  throw std::runtime_error(fmt::format(
      "step {}: the sampler's log-probs differ from the trainer's by {:.3g} on average (max {:.3g}, KL {:.3g}), above "
      "grpo.max_logp_mismatch = {:.3g}; sampler and trainer no longer compute the same policy (dtype, device or "
      "sampling settings?)",
      step, mean, metrics.at("mismatch/logp_abs_max"), metrics.at("mismatch/kl"), *grpo.max_logp_mismatch));
}

}  // namespace

RunSummary run_grpo(const Config& config) {
  {
    // Every rank checks every role's split the same way, before anything is loaded.
    const int64_t ranks = world().size(), rollout_ranks = config.trainer.rollout_ranks;
    const int64_t g = config.grpo.group_size;
    if (rollout_ranks == 0) {
      check_step_split(config.trainer, g, ranks, "ranks");
    } else if (rollout_ranks < ranks) {  // else the layout's own error names trainer.rollout_ranks
      check_step_split(config.trainer, g, ranks - rollout_ranks, "trainer ranks");
      check_step_split(config.trainer, g, rollout_ranks, "rollout ranks", /*passes_matter=*/false);
    }
  }
  auto run = start_training_run(config, "grpo");
  Communicator& comm = *run->comm;
  StatusOr<RewardSet> rewards = RewardSet::create(config.reward.functions);
  if (!rewards) throw std::runtime_error(rewards.status().message());
  auto [data, order] = load_training_data(*run, &*rewards);
  TrainingGuards guards(config.trainer.guards, comm.rank() == 0);
  ThreadPool reward_pool(scoring_threads(config.reward));
  const bool use_kl = config.grpo.kl.beta > 0;
  // trainer.rollout_ranks > 0: this rank only generates and scores (run_rollout_role below).
  const bool rollout_role = run->layout && run->layout->rollout;
  // The reference for the KL term is the starting model (model.path), loaded afresh so that a
  // resumed run compares with the same reference as an uninterrupted one. It and the distillation
  // teacher are frozen, and at stage 3 sharded like the policy.
  FrozenModel reference, teacher;
  if (use_kl && !rollout_role) reference = load_frozen_model(config.model, config, comm, "reference model");
  const bool distill = config.distill.enabled();
  if (distill && config.grpo.filter_zero_std_groups)
    throw std::runtime_error("distill.teacher_path with grpo.filter_zero_std_groups: the reverse-KL advantage gives "
                             "every group a signal, so no group may be left out; set grpo.filter_zero_std_groups: false");
  if (distill && !rollout_role) teacher = load_teacher(config, run->policy, comm);

  const int64_t prompts_per_step = config.trainer.prompts_per_step, g = config.grpo.group_size;
  const ItemShare mine = share_of(prompts_per_step, comm.rank(), comm.size());
  const int64_t begin = mine.begin, end = mine.end;
  const GenerationOptions generation = generation_options(config.rollout, run->policy, g);
  GrpoLossOptions loss_options{config.grpo.policy_loss, config.grpo.kl, config.grpo.aggregation};
  // seq-mean-token-sum-norm's divisor must be one constant for every rank and micro-batch, not
  // their padded widths, or N ranks would not train like one.
  if (!loss_options.aggregation.loss_scale_factor)
    loss_options.aggregation.loss_scale_factor = static_cast<double>(config.rollout.max_new_tokens);
  const RolloutCorrectionOptions& correction_options = config.grpo.rollout_correction;
  if (correction_options.batch_normalize && comm.size() > 1)
    log_warn("grpo.rollout_correction.batch_normalize: weights are normalized over each rank's batch");
  const at::Device device = run->params.front().device();
  if (world().rank() == 0 && config.rollout.max_staleness > 0 && config.trainer.rollout_ranks == 0)
    log_warn("rollout.max_staleness applies to the disaggregated layout only (trainer.rollout_ranks > 0); colocated "
             "runs are on-policy");
  if (world().rank() == 0 && config.rollout.max_staleness > 0 && config.trainer.rollout_ranks > 0 &&
      !correction_options.enabled())
    log_warn("rollout.max_staleness {}: batches sampled by older weights train without an importance correction "
             "(grpo.rollout_correction, docs/algorithms.md)", config.rollout.max_staleness);

  const bool refill = config.grpo.filter_zero_std_groups && config.grpo.max_generation_rounds > 1;
  if (config.grpo.max_generation_rounds > 1 && !config.grpo.filter_zero_std_groups)
    throw std::runtime_error("grpo.max_generation_rounds > 1 refills groups without signal, so it needs "
                             "grpo.filter_zero_std_groups: true");

  // Steps 1-3 for one round: the next prompts_per_step prompts of the data order; this rank's share
  // (a prompt's G samples stay on one rank) sampled and scored. `comm` is the sampling ranks: every
  // rank when colocated, the rollout ranks when disaggregated.
  int64_t step_reward_errors = 0;  // over every round of the current step
  std::unique_ptr<RolloutEngine> engine;  // a rollout rank's versioned weights
  if (rollout_role) engine = std::make_unique<RolloutEngine>(run->policy.model, run->step);
  auto sample_round = [&](int64_t step, int64_t round) {
    SampledRound r;
    const std::vector<int64_t> indices = order.next(prompts_per_step);
    std::vector<std::vector<int64_t>> prompts;
    std::vector<uint64_t> keys;
    for (int64_t i = begin; i < end; ++i) {
      r.examples.push_back(&data.examples[static_cast<size_t>(indices[static_cast<size_t>(i)])]);
      prompts.push_back(encode_prompt(run->policy, r.examples.back()->prompt));
      keys.push_back(prompt_key(step, round, prompts_per_step, i));  // independent of the rank count
    }

    const auto rollout_start = std::chrono::steady_clock::now();
    {
      // Ranks decode different numbers of tokens, so a sharded policy is gathered whole first: a
      // collective, so every rank takes part, with prompts or without.
      const FullParameters whole(run->sharded.get());
      const std::vector<uint64_t> seeds = rollout_seeds(static_cast<uint64_t>(config.trainer.seed), keys, g);
      if (!prompts.empty()) {
        r.batch = engine ? engine->generate(prompts, generation, seeds, &*run->policy.tokenizer)
                         : generate(run->policy.model, prompts, generation, seeds, &*run->policy.tokenizer);
      }
    }
    r.rollout_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - rollout_start).count();

    const auto reward_start = std::chrono::steady_clock::now();
    for (int64_t row = 0; row < static_cast<int64_t>(r.examples.size()) * g; ++row) {
      const Example& e = *r.examples[static_cast<size_t>(row / g)];
      const std::vector<int64_t> tokens = completion_tokens(r.batch, row);
      RewardSample s;
      s.id = fmt::format("{}#{}", e.id, row % g);
      s.prompt = e.prompt;
      s.completion = run->policy.tokenizer->decode(tokens, true);
      s.fields = e.fields;
      s.completion_tokens = static_cast<int64_t>(tokens.size());
      r.samples.push_back(std::move(s));
    }
    ScoringStats scoring;
    r.scores = rewards->score(r.samples, config.reward, reward_pool, &scoring);
    step_reward_errors += scoring.errors;
    r.reward_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - reward_start).count();
    return r;
  };

  // Steps 1-3 for step `step` on the sampling ranks: its rounds of prompts, sampled and scored,
  // the groups it keeps (dynamic sampling) as this rank's part.
  auto sample_step = [&](int64_t step) {
    step_reward_errors = 0;
    std::vector<SampledRound> rounds{sample_round(step, 0)};
    ScoredBatch out;
    auto add_timings = [&](const SampledRound& round) {
      out.rollout_seconds += round.rollout_seconds;
      out.reward_seconds += round.reward_seconds;
    };
    add_timings(rounds.back());
    out.generated_groups = out.kept_groups = prompts_per_step;
    if (refill) {
      std::vector<std::vector<bool>> signal;  // every rank's groups, round by round
      std::vector<GroupRef> kept;
      for (;;) {
        signal.push_back(global_signal(comm, rounds.back().scores, prompts_per_step, begin, g));
        kept = first_signal_groups(signal, prompts_per_step);
        if (static_cast<int64_t>(kept.size()) == prompts_per_step ||
            static_cast<int64_t>(rounds.size()) == config.grpo.max_generation_rounds)
          break;
        rounds.push_back(sample_round(step, static_cast<int64_t>(rounds.size())));
        add_timings(rounds.back());
      }
      out.generated_groups = prompts_per_step * static_cast<int64_t>(rounds.size());
      kept = filled_with_flat_groups(std::move(kept), signal, prompts_per_step);
      out.kept_groups = static_cast<int64_t>(kept.size());  // the fill too: groups_kept counts those with signal
      rounds = {keep_groups(rounds, kept, begin, end, g, run->policy.pad_id)};
    }
    out.batch = std::move(rounds.front().batch);
    out.samples = std::move(rounds.front().samples);
    out.scores = std::move(rounds.front().scores);
    out.batch.policy_version = engine ? engine->version() : step;  // colocated: the weights after `step` updates
    out.reward_errors = step_reward_errors;
    if (refill && comm.size() > 1 && !rollout_role) {
      // Each rank kept the groups it sampled itself: as many as prompts_per_step over all ranks,
      // but unevenly, possibly none here (a rank without rows divided by zero). Pooled and cut
      // evenly, every rank trains on prompts_per_step / ranks of them, in the same passes.
      // (Rollout ranks send their parts as they are: the trainers pool and cut them anyway.)
      std::vector<ScoredBatch> parts;
      for (const std::string& bytes : all_gather_strings(comm, encode_scored_batch(out)))
        parts.push_back(decode_scored_batch(bytes));
      const int64_t generated = out.generated_groups;
      out = trainer_share(parts, comm.rank(), comm.size(), run->policy.pad_id);
      out.generated_groups = generated;
    }
    out.data_cursor = order.cursor();
    return out;
  };

  if (rollout_role) {
    run_rollout_role(*run, *engine, sample_step);
    RunSummary summary;
    summary.first_step = summary.last_step = run->step;
    return summary;
  }
  // Disaggregated trainers: the rollout ranks get the starting weights, then each step's batch
  // comes from them.
  Communicator& host = world();
  if (run->layout) send_policy(*run, host);

  RunSummary summary;
  summary.first_step = run->step;
  std::optional<std::vector<std::string>> component_names;
  const auto started = std::chrono::steady_clock::now();
  while (steps_remain(*run)) {
    const auto step_start = std::chrono::steady_clock::now();
    set_collective_context(fmt::format("step {}", run->step + 1));
    // 1-3. This rank's prompts, their G samples each, and rewards. With dynamic sampling, more
    // rounds of prompts until prompts_per_step groups carry signal (or max_generation_rounds).
    // Disaggregated: the rollout ranks' batch for this step, and this trainer's share of it.
    const ScoredBatch scored = run->layout ? receive_batch(*run, host) : sample_step(run->step);
    const double batch_wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    const int64_t generated_groups = scored.generated_groups, kept_groups = scored.kept_groups;
    step_reward_errors = scored.reward_errors;
    const RolloutBatch& batch = scored.batch;
    const std::vector<RewardSample>& samples = scored.samples;
    const std::vector<SampleScores>& scores = scored.scores;
    const int64_t n = batch.completion_ids.size(0);
    at::Tensor mask = batch.completion_mask.clone();
    int64_t truncated = 0;
    for (int64_t row = 0; row < n; ++row) {
      if (batch.finish_reasons[static_cast<size_t>(row)] == FinishReason::kLength) {
        ++truncated;
        if (config.trainer.mask_truncated) mask[row].fill_(false);
      }
    }
    std::vector<float> totals;
    for (const SampleScores& s : scores) totals.push_back(static_cast<float>(s.total));
    const double rollout_seconds = scored.rollout_seconds, reward_seconds = scored.reward_seconds;
    const int64_t policy_version = batch.policy_version;
    const auto train_start = std::chrono::steady_clock::now();

    // 4. Advantages within each group.
    const at::Tensor reward_tensor = at::tensor(totals, at::kFloat);
    const at::Tensor group_advantage = group_advantages(reward_tensor, g, config.grpo.advantage).to(device);
    const at::Tensor flat_group = std::get<0>(reward_tensor.view({-1, g}).max(1)) == std::get<0>(reward_tensor.view({-1, g}).min(1));
    if (config.grpo.filter_zero_std_groups)
      mask.masked_fill_(flat_group.repeat_interleave(g).unsqueeze(1), false);
    // The batch is built on the host; it moves to the model's device once, for every pass below.
    const at::Tensor prompt_ids = batch.prompt_ids.to(device), prompt_mask = batch.prompt_mask.to(device);
    const at::Tensor completion_ids = batch.completion_ids.to(device);
    at::Tensor mask_on_device = mask.to(device);  // the tokens the loss counts
    // Attention covers every generated token, whatever the loss counts.
    const at::Tensor attention_mask = batch.completion_mask.to(device);
    const at::Tensor sampling_logp = batch.sampling_logp.to(device);

    // 5. Old and reference log-probs, the rollout correction, global normalizers.
    const double temperature = config.rollout.temperature > 0 ? config.rollout.temperature : 1.0;
    // Forward and backward passes take at most trainer.micro_batch_size rows at a time.
    const int64_t micro = config.trainer.micro_batch_size > 0 ? std::min(config.trainer.micro_batch_size, n) : n;
    check_same_pass_count(*run, (n + micro - 1) / micro);
    auto slice = [](const at::Tensor& t, int64_t start, int64_t length) { return t.defined() ? t.narrow(0, start, length) : t; };
    auto frozen_logprobs = [&](Decoder& model) {
      at::NoGradGuard no_grad;
      std::vector<at::Tensor> parts;
      for (int64_t start = 0; start < n; start += micro) {
        const int64_t len = std::min(micro, n - start);
        parts.push_back(completion_logprobs(model, slice(prompt_ids, start, len), slice(prompt_mask, start, len),
                                            slice(completion_ids, start, len), slice(attention_mask, start, len),
                                            temperature));
      }
      return parts.empty() ? at::zeros(completion_ids.sizes(), completion_ids.options().dtype(at::kFloat)) : at::cat(parts);
    };
    at::Tensor old_logp, ref_logp;
    if (config.grpo.updates_per_batch > 1 || correction_options.enabled()) old_logp = frozen_logprobs(run->policy.model);
    if (use_kl) ref_logp = frozen_logprobs(reference.policy.model);
    // On-policy distillation: per-token advantages from the teacher's log-probs of the sampled
    // tokens against the sampler's own, in place of (or beside) the group advantages.
    at::Tensor advantages = group_advantage;
    at::Tensor reverse_kl;
    double teacher_seconds = 0;
    if (distill) {
      const auto teacher_start = std::chrono::steady_clock::now();
      const at::Tensor teacher_logp = frozen_logprobs(teacher.policy.model);
      teacher_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - teacher_start).count();
      reverse_kl = reverse_kl_per_token(sampling_logp, teacher_logp, mask_on_device);
      advantages = distillation_advantages(sampling_logp, teacher_logp, mask_on_device, group_advantage, config.distill.options);
    }
    // Sampler vs trainer log-probs at the same weights: from old_logp, or from the first update's pass.
    std::optional<LogpMismatch> mismatch;
    if (old_logp.defined()) mismatch = logp_mismatch(old_logp, sampling_logp, attention_mask);
    at::Tensor is_weights;
    const double loss_tokens_before_rejection = mask_on_device.sum().item<double>();
    if (correction_options.enabled()) {
      const RolloutCorrection correction = rollout_correction(old_logp, sampling_logp, mask_on_device, correction_options);
      mask_on_device = correction.mask;
      is_weights = correction.weights;
    }
    std::vector<double> counts{mask_on_device.sum().item<double>(),
                               static_cast<double>((mask_on_device.sum(1) > 0).sum().item<int64_t>()),
                               loss_tokens_before_rejection};
    comm.all_reduce_sum(counts);

    // 6. mu policy updates (none when no group carries signal anywhere), each accumulating the
    // gradients of every micro-batch before one optimizer step.
    const double lr = scheduled_lr(config.optimizer, run->step, config.trainer.steps);
    at::Tensor entropy = at::zeros_like(mask_on_device, at::kFloat);
    at::Tensor kl = at::zeros_like(mask_on_device, at::kFloat);
    // The last update's loss and clipped-token count, summed on the device and read once for the
    // metrics, so that no micro-batch waits on it.
    const at::Tensor loss_sum = at::zeros({}, mask_on_device.options().dtype(at::kDouble));
    const at::Tensor clipped_tokens = at::zeros({}, mask_on_device.options().dtype(at::kDouble));
    double grad_norm = 0;
    int64_t skipped = 0;
    const int64_t updates = counts[0] > 0 ? config.grpo.updates_per_batch : 0;
    for (int64_t update = 0; update < updates; ++update) {
      run->optimizer->zero_grad();
      loss_sum.zero_();
      clipped_tokens.zero_();
      for (int64_t start = 0; start < n; start += micro) {
        const int64_t len = std::min(micro, n - start);
        GrpoLossInputs in;
        at::Tensor part_entropy;
        in.logp = completion_logprobs(run->policy.model, slice(prompt_ids, start, len), slice(prompt_mask, start, len),
                                      slice(completion_ids, start, len), slice(attention_mask, start, len), temperature,
                                      update == 0 ? &part_entropy : nullptr);
        if (update == 0) entropy.narrow(0, start, len).copy_(part_entropy);
        if (update == 0 && !old_logp.defined())
          add_mismatch(mismatch, logp_mismatch(in.logp, slice(sampling_logp, start, len), slice(attention_mask, start, len)));
        in.old_logp = config.grpo.updates_per_batch > 1 ? slice(old_logp, start, len) : in.logp.detach();  // on-policy: ratio 1
        in.ref_logp = slice(ref_logp, start, len);
        in.advantages = slice(advantages, start, len);
        in.mask = slice(mask_on_device, start, len);
        in.is_weights = slice(is_weights, start, len);
        in.global_token_count = counts[0];
        in.global_sequence_count = counts[1];
        // Every micro-batch's loss is divided by the global token/sequence counts (or a constant),
        // so the gradients summed over micro-batches and ranks are exactly those of the whole batch
        // in one pass on one rank.
        const GrpoLossResult part = grpo_loss(in, loss_options);
        part.loss.backward();
        loss_sum.add_(part.loss.detach());
        clipped_tokens.add_(part.metrics.clip_frac * part.metrics.valid_tokens);
        kl.narrow(0, start, len).copy_(part.kl.detach());
      }
      grad_norm = run->optimizer->step(lr);  // summed over ranks, clipped, AdamW; skipped if not finite
      if (!std::isfinite(grad_norm)) {
        ++skipped;
        log_warn("step {}: non-finite gradient norm, update skipped on every rank", run->step + 1);
      }
    }
    // Measured every step: a step without updates (no group with signal anywhere) takes one pass for
    // it, and a rank without rows contributes nothing.
    if (!mismatch)
      mismatch = logp_mismatch(updates > 0 ? sampling_logp : frozen_logprobs(run->policy.model), sampling_logp, attention_mask);
    ++run->step;
    const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - train_start).count();
    // Disaggregated: the new weights go to the rollout ranks now (unless the run ends here), so
    // that they may sample with them while this step's metrics are reduced and written.
    WeightSyncStats sync;
    if (run->layout && run->step < config.trainer.steps) sync = send_policy(*run, host);

    // 7. Metrics, reduced over ranks. Every rank must reduce the same names in the same order, so
    // reward components are those rank 0 saw at the first step, agreed once by broadcast.
    if (!component_names) component_names = agree_on_names(comm, scores);
    const at::Tensor valid = mask_on_device.to(at::kFloat);
    const double rows = static_cast<double>(kept_groups * g), tokens = std::max(counts[0], 1.0);
    std::vector<std::pair<std::string, double>> sums;  // name, local sum
    std::vector<double> divisors;
    auto add = [&](const std::string& name, double local_sum, double divisor) {
      sums.emplace_back(name, local_sum);
      divisors.push_back(divisor);
    };
    add("reward", reward_tensor.sum().item<double>(), rows);
    for (const std::string& label : rewards->labels()) {
      double sum = 0;
      for (const SampleScores& sc : scores) sum += sc.rewards.count(label) ? sc.rewards.at(label) : 0.0;
      add("reward/" + label, sum, rows);
    }
    for (const std::string& name : *component_names) {
      double sum = 0;
      for (const SampleScores& sc : scores) sum += sc.components.count(name) ? sc.components.at(name) : 0.0;
      add("component/" + name, sum, rows);
    }
    add("response_tokens", batch.completion_mask.sum().item<double>(), rows);
    add("truncated", static_cast<double>(truncated), rows);
    add("zero_std_groups", flat_group.sum().item<double>(), static_cast<double>(kept_groups));
    const double evaluations = static_cast<double>(generated_groups * g) * static_cast<double>(rewards->labels().size());
    add("reward_errors", static_cast<double>(step_reward_errors), evaluations);
    add("kl", (kl * valid).sum().item<double>(), tokens);
    add("entropy", (entropy * valid).sum().item<double>(), tokens);
    add("clip_frac", clipped_tokens.item<double>(), tokens);
    if (distill) add("distill/reverse_kl", (reverse_kl * valid).sum().item<double>(), tokens);
    add("loss", loss_sum.item<double>(), 1.0);  // each rank's part of the globally normalized loss
    if (correction_options.enabled()) {
      add("correction/weight_mean", is_weights.defined() ? is_weights.sum().item<double>() : counts[2], counts[2]);
      add("correction/rejected_frac", loss_tokens_before_rejection - mask_on_device.sum().item<double>(), counts[2]);
    }
    std::vector<double> values;
    for (const auto& entry : sums) values.push_back(entry.second);
    comm.all_reduce_sum(values);
    std::map<std::string, double> metrics;
    for (size_t i = 0; i < sums.size(); ++i) metrics[sums[i].first] = values[i] / std::max(divisors[i], 1.0);
    for (const auto& [name, value] : mismatch_metrics(comm, *mismatch)) metrics[name] = value;
    check_mismatch_bound(config.grpo, metrics, run->step);
    if (metrics.count("component/math.correct")) metrics["accuracy"] = metrics["component/math.correct"];
    const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    if (refill) {
      metrics["groups_generated"] = static_cast<double>(generated_groups);
      // With signal: a step short of them was filled with flat groups (zero_std_groups).
      metrics["groups_kept"] = static_cast<double>(kept_groups - std::llround(metrics["zero_std_groups"] * static_cast<double>(kept_groups)));
    }
    metrics["grad_norm"] = grad_norm;
    metrics["lr"] = lr;
    metrics["skipped_updates"] = static_cast<double>(skipped);
    metrics["rollout_s"] = rollout_seconds;
    metrics["reward_s"] = reward_seconds;
    metrics["train_s"] = train_seconds;
    if (distill) metrics["distill/teacher_s"] = teacher_seconds;
    metrics["step_s"] = step_seconds;
    metrics["tokens_per_s"] = metrics["response_tokens"] * rows / std::max(step_seconds, 1e-9);
    metrics["policy_version"] = static_cast<double>(policy_version);
    metrics["staleness"] = static_cast<double>(run->step - 1 - policy_version);
    metrics["data/epoch"] = scored.data_cursor.at("epoch").get<double>();
    metrics["data/position"] = scored.data_cursor.at("position").get<double>();
    if (run->layout) {
      metrics["batch_wait_s"] = batch_wait_seconds;
      metrics["weight_sync_s"] = sync.seconds;
      metrics["weight_sync_wait_s"] = sync.wait_seconds;
      metrics["weight_sync_mb"] = static_cast<double>(sync.bytes) / 1e6;
    }
    summary.last_metrics = metrics;
    if (run->metrics) {
      // A few decoded samples per step, for reading what the policy does.
      std::vector<nlohmann::json> rows;
      for (size_t i = 0; i < std::min<size_t>(2, samples.size()); ++i)
        rows.push_back({{"step", run->step}, {"prompt", samples[i].prompt}, {"completion", samples[i].completion},
                        {"reward", scores[i].total}});
      run->metrics->log_samples(rows);
    }
    std::vector<std::string> console = {"reward"};
    for (const std::string& label : rewards->labels()) console.push_back("reward/" + label);
    for (const char* key : {"accuracy", "distill/reverse_kl", "kl", "clip_frac", "entropy", "response_tokens", "truncated", "tokens_per_s"})
      console.push_back(key);
    const bool stop = finish_step(*run, "grpo", {{"data", scored.data_cursor}}, metrics, console, step_seconds);
    // After the step is logged, so its metrics row shows what tripped a guard.
    check_guards(guards, run->step, metrics, evaluations, updates, distill);
    if (stop) break;
  }
  // The rollout ranks wait for the next batch request: the run has ended (its last step, a stop, or
  // a resume with nothing left to train, which never entered the loop).
  if (run->layout) broadcast_control(host, {false, run->step});
  export_final(*run);
  summary.last_step = run->step;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return summary;
}

}  // namespace grpo
