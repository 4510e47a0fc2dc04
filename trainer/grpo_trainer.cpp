// One GRPO step, top to bottom (../shared/DESIGN.md): this rank's prompts -> G samples each ->
// rewards -> group advantages -> old/reference log-probs -> mu updates with grpo_loss, gradients
// summed over ranks, global-norm clipping, AdamW -> metrics reduced over ranks -> checkpoint.

#include <chrono>
#include <cmath>
#include <optional>
#include <set>
#include <thread>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/logging.h"
#include "core/thread_pool.h"
#include "rewards/reward_set.h"
#include "rollout/engine.h"
#include "trainer/data.h"
#include "trainer/grpo_loss.h"
#include "trainer/train_common.h"
#include "trainer/trainers.h"

namespace grpo {
namespace {

// The reference policy for the KL term: the starting model (model.path), loaded afresh so that a
// resumed run compares with the same reference as an uninterrupted one, and frozen.
Decoder load_reference(const Config& config) {
  StatusOr<Policy> reference = load_policy(config.model, static_cast<uint64_t>(config.trainer.seed));
  if (!reference) throw std::runtime_error("reference model: " + reference.status().message());
  for (auto& p : reference->model->parameters()) p.set_requires_grad(false);
  return reference->model;
}

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

}  // namespace

RunSummary run_grpo(const Config& config) {
  auto run = start_training_run(config, "grpo");
  Communicator& comm = *run->comm;
  auto [data, order] = load_training_data(*run);
  StatusOr<RewardSet> rewards = RewardSet::create(config.reward.functions);
  if (!rewards) throw std::runtime_error(rewards.status().message());
  ThreadPool reward_pool(config.reward.threads > 0 ? static_cast<size_t>(config.reward.threads) : 1);
  const bool use_kl = config.grpo.kl.beta > 0;
  Decoder reference = use_kl ? load_reference(config) : Decoder(nullptr);
  // At stage 3 the frozen reference is sharded like the policy (no gradients, no optimizer).
  std::unique_ptr<ShardedDecoder> sharded_reference;
  if (use_kl && config.trainer.zero_stage == 3) sharded_reference = shard(reference, comm, shard_options(config.trainer));

  const int64_t prompts_per_step = config.trainer.prompts_per_step, g = config.grpo.group_size;
  const int64_t begin = prompts_per_step * comm.rank() / comm.size();
  const int64_t end = prompts_per_step * (comm.rank() + 1) / comm.size();
  GenerationOptions generation;
  generation.sampling.temperature = config.rollout.temperature;
  generation.sampling.top_p = config.rollout.top_p;
  generation.sampling.top_k = config.rollout.top_k;
  generation.sampling.min_p = config.rollout.min_p;
  generation.max_new_tokens = config.rollout.max_new_tokens;
  generation.group_size = g;
  generation.stop_token_ids = run->policy.stop_token_ids;
  generation.stop_strings = config.rollout.stop;
  generation.pad_id = run->policy.pad_id;
  const GrpoLossOptions loss_options{config.grpo.policy_loss, config.grpo.kl, config.grpo.aggregation};
  const at::Device device = run->params.front().device();

  RunSummary summary;
  summary.first_step = run->step;
  std::optional<std::vector<std::string>> component_names;
  const auto started = std::chrono::steady_clock::now();
  while (run->step < config.trainer.steps) {
    const auto step_start = std::chrono::steady_clock::now();
    // 1. This rank's prompts (a prompt's G samples stay on one rank).
    const std::vector<int64_t> indices = order.next(prompts_per_step);
    std::vector<const Example*> examples;
    std::vector<std::vector<int64_t>> prompts;
    std::vector<uint64_t> keys;
    for (int64_t i = begin; i < end; ++i) {
      examples.push_back(&data.examples[static_cast<size_t>(indices[static_cast<size_t>(i)])]);
      prompts.push_back(encode_prompt(run->policy, examples.back()->prompt));
      keys.push_back(static_cast<uint64_t>(run->step * prompts_per_step + i));  // independent of the rank count
    }

    // 2. Rollout.
    const auto rollout_start = std::chrono::steady_clock::now();
    RolloutBatch batch;
    {
      // Ranks decode different numbers of tokens, so a sharded policy is gathered whole first.
      const FullParameters whole(run->sharded.get());
      batch = generate(run->policy.model, prompts, generation,
                       rollout_seeds(static_cast<uint64_t>(config.trainer.seed), keys, g), &*run->policy.tokenizer);
    }
    const double rollout_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - rollout_start).count();
    const int64_t n = batch.completion_ids.size(0);

    // 3. Rewards.
    const auto reward_start = std::chrono::steady_clock::now();
    std::vector<RewardSample> samples;
    at::Tensor mask = batch.completion_mask.clone();
    int64_t truncated = 0;
    for (int64_t row = 0; row < n; ++row) {
      const Example& e = *examples[static_cast<size_t>(row / g)];
      const std::vector<int64_t> tokens = completion_tokens(batch, row);
      RewardSample s;
      s.id = fmt::format("{}#{}", e.id, row % g);
      s.prompt = e.prompt;
      s.completion = run->policy.tokenizer->decode(tokens, true);
      s.fields = e.fields;
      s.completion_tokens = static_cast<int64_t>(tokens.size());
      samples.push_back(std::move(s));
      if (batch.finish_reasons[static_cast<size_t>(row)] == FinishReason::kLength) {
        ++truncated;
        if (config.trainer.mask_truncated) mask[row].fill_(false);
      }
    }
    const std::vector<SampleScores> scores = rewards->score(samples, config.reward, reward_pool);
    std::vector<float> totals;
    for (const SampleScores& s : scores) totals.push_back(static_cast<float>(s.total));
    const double reward_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - reward_start).count();
    const auto train_start = std::chrono::steady_clock::now();

    // 4. Advantages within each group.
    const at::Tensor reward_tensor = at::tensor(totals, at::kFloat);
    const at::Tensor advantages = group_advantages(reward_tensor, g, config.grpo.advantage).to(device);
    const at::Tensor flat_group = std::get<0>(reward_tensor.view({-1, g}).max(1)) == std::get<0>(reward_tensor.view({-1, g}).min(1));
    if (config.grpo.filter_zero_std_groups)
      mask.masked_fill_(flat_group.repeat_interleave(g).unsqueeze(1), false);
    // The batch is built on the host; it moves to the model's device once, for every pass below.
    const at::Tensor prompt_ids = batch.prompt_ids.to(device), prompt_mask = batch.prompt_mask.to(device);
    const at::Tensor completion_ids = batch.completion_ids.to(device), mask_on_device = mask.to(device);

    // 5. Global normalizers, old and reference log-probs.
    std::vector<double> counts{mask.sum().item<double>(), static_cast<double>((mask.sum(1) > 0).sum().item<int64_t>())};
    comm.all_reduce_sum(counts);
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
                                            slice(completion_ids, start, len), slice(mask_on_device, start, len),
                                            temperature));
      }
      return at::cat(parts);
    };
    at::Tensor old_logp, ref_logp;
    if (config.grpo.updates_per_batch > 1) old_logp = frozen_logprobs(run->policy.model);
    if (use_kl) ref_logp = frozen_logprobs(reference);

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
                                      slice(completion_ids, start, len), slice(mask_on_device, start, len), temperature,
                                      update == 0 ? &part_entropy : nullptr);
        if (update == 0) entropy.narrow(0, start, len).copy_(part_entropy);
        in.old_logp = config.grpo.updates_per_batch > 1 ? slice(old_logp, start, len) : in.logp.detach();  // on-policy: ratio 1
        in.ref_logp = slice(ref_logp, start, len);
        in.advantages = slice(advantages, start, len);
        in.mask = slice(mask_on_device, start, len);
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
    ++run->step;
    const double train_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - train_start).count();

    // 7. Metrics, reduced over ranks. Every rank must reduce the same names in the same order, so
    // reward components are those rank 0 saw at the first step, agreed once by broadcast.
    if (!component_names) component_names = agree_on_names(comm, scores);
    const at::Tensor valid = mask_on_device.to(at::kFloat);
    const double rows = static_cast<double>(prompts_per_step * g), tokens = std::max(counts[0], 1.0);
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
    add("zero_std_groups", flat_group.sum().item<double>(), static_cast<double>(prompts_per_step));
    add("kl", (kl * valid).sum().item<double>(), tokens);
    add("entropy", (entropy * valid).sum().item<double>(), tokens);
    add("clip_frac", clipped_tokens.item<double>(), tokens);
    add("loss", loss_sum.item<double>(), 1.0);  // each rank's part of the globally normalized loss
    std::vector<double> values;
    for (const auto& entry : sums) values.push_back(entry.second);
    comm.all_reduce_sum(values);
    std::map<std::string, double> metrics;
    for (size_t i = 0; i < sums.size(); ++i) metrics[sums[i].first] = values[i] / divisors[i];
    if (metrics.count("component/math.correct")) metrics["accuracy"] = metrics["component/math.correct"];
    const double step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    metrics["grad_norm"] = grad_norm;
    metrics["lr"] = lr;
    metrics["skipped_updates"] = static_cast<double>(skipped);
    metrics["rollout_s"] = rollout_seconds;
    metrics["reward_s"] = reward_seconds;
    metrics["train_s"] = train_seconds;
    metrics["step_s"] = step_seconds;
    metrics["tokens_per_s"] = metrics["response_tokens"] * rows / std::max(step_seconds, 1e-9);
    summary.last_metrics = metrics;
    if (comm.rank() == 0 && !samples.empty()) {
      // A few decoded samples per step, for reading what the policy does.
      std::ofstream out(config.trainer.run_dir + "/samples.jsonl", std::ios::app);
      for (size_t i = 0; i < std::min<size_t>(2, samples.size()); ++i)
        out << nlohmann::json{{"step", run->step}, {"prompt", samples[i].prompt}, {"completion", samples[i].completion},
                              {"reward", scores[i].total}}
                   .dump()
            << "\n";
    }
    std::vector<std::string> console = {"reward"};
    for (const std::string& label : rewards->labels()) console.push_back("reward/" + label);
    for (const char* key : {"accuracy", "kl", "clip_frac", "entropy", "response_tokens", "truncated", "tokens_per_s"})
      console.push_back(key);
    if (finish_step(*run, "grpo", {{"data", order.cursor()}}, metrics, console, step_seconds)) break;
  }
  export_final(*run);
  summary.last_step = run->step;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return summary;
}

}  // namespace grpo
