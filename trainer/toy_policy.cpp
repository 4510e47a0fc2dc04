#include "trainer/toy_policy.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>

#include "trainer/grpo_loss.h"
#include "trainer/optimizer.h"

namespace grpo {
namespace {

struct ToyTask {
  at::Tensor targets;  // [P, L] token ids
  at::Tensor lengths;  // [P]
};

ToyTask make_task(const ToyTaskOptions& options, at::Generator& generator) {
  ToyTask task;
  task.targets = at::randint(options.vocab_size, {options.num_prompts, options.max_length}, generator, at::kLong);
  task.lengths = at::randint(options.max_length / 2, options.max_length + 1, {options.num_prompts}, generator, at::kLong);
  return task;
}

// log pi(token | prompt, position) for each sampled token: [rows, L].
at::Tensor token_logp(const at::Tensor& logits, const at::Tensor& prompts, const at::Tensor& tokens, double temperature) {
  const at::Tensor scaled = logits.index_select(0, prompts) / temperature;  // [rows, L, V]
  return at::log_softmax(scaled, -1).gather(2, tokens.unsqueeze(2)).squeeze(2);
}

}  // namespace

std::vector<ToyStepMetrics> train_toy_policy(const Config& config, const ToyTaskOptions& options,
                                             const std::function<void(const ToyStepMetrics&)>& on_step) {
  TORCH_CHECK(config.rollout.temperature > 0, "the toy policy samples; rollout.temperature must be > 0");
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(config.trainer.seed));
  const ToyTask task = make_task(options, generator);
  const int64_t group_size = config.grpo.group_size;
  const double temperature = config.rollout.temperature;

  at::Tensor logits = at::zeros({options.num_prompts, options.max_length, options.vocab_size}, at::kFloat);
  logits.set_requires_grad(true);
  const at::Tensor reference_logits = logits.detach().clone();
  AdamW optimizer({logits}, config.optimizer);
  const GrpoLossOptions loss_options{config.grpo.policy_loss, config.grpo.kl, config.grpo.aggregation};
  const at::Tensor positions = at::arange(options.max_length, at::kLong);

  std::vector<ToyStepMetrics> history;
  for (int64_t step = 0; step < config.trainer.steps; ++step) {
    // Rollout: prompts_per_step prompts, each sampled group_size times (rows of a group adjacent).
    const at::Tensor prompt_ids =
        (at::arange(config.trainer.prompts_per_step, at::kLong) + step * config.trainer.prompts_per_step) %
        options.num_prompts;
    const at::Tensor rows = prompt_ids.repeat_interleave(group_size);  // [N]
    at::Tensor tokens, old_logp, ref_logp;
    {
      at::NoGradGuard no_grad;
      const at::Tensor probs = at::softmax(logits.index_select(0, rows) / temperature, -1);  // [N, L, V]
      tokens = at::multinomial(probs.view({-1, options.vocab_size}), 1, false, generator).view({rows.size(0), -1});
      old_logp = token_logp(logits, rows, tokens, temperature);
      ref_logp = token_logp(reference_logits, rows, tokens, temperature);
    }
    const at::Tensor lengths = task.lengths.index_select(0, rows);
    const at::Tensor mask = positions.unsqueeze(0) < lengths.unsqueeze(1);  // [N, L]
    const at::Tensor matches = (tokens == task.targets.index_select(0, rows)) & mask;
    const at::Tensor rewards = matches.sum(1).to(at::kFloat) / lengths.to(at::kFloat);
    const at::Tensor exact = (matches.sum(1) == lengths).to(at::kFloat);
    const at::Tensor advantages = group_advantages(rewards, group_size, config.grpo.advantage);

    // mu policy updates on this batch.
    const double lr = scheduled_lr(config.optimizer, step, config.trainer.steps);
    GrpoLossResult result;
    at::Tensor grad_norm;
    for (int64_t update = 0; update < config.grpo.updates_per_batch; ++update) {
      optimizer.zero_grad();
      GrpoLossInputs inputs;
      inputs.logp = token_logp(logits, rows, tokens, temperature);
      inputs.old_logp = old_logp;
      inputs.ref_logp = config.grpo.kl.beta > 0 ? ref_logp : at::Tensor();
      inputs.advantages = advantages;
      inputs.mask = mask;
      result = grpo_loss(inputs, loss_options);
      result.loss.backward();
      grad_norm = clip_grad_norm({logits}, config.optimizer.max_grad_norm);
      optimizer.step(lr);
    }

    ToyStepMetrics metrics;
    metrics.step = step + 1;
    metrics.reward_mean = rewards.mean().item<double>();
    metrics.exact_match = exact.mean().item<double>();
    metrics.loss = result.loss.item<double>();
    metrics.clip_frac = result.metrics.clip_frac.item<double>();
    metrics.kl_mean = result.metrics.kl_mean.item<double>();
    metrics.grad_norm = grad_norm.item<double>();
    metrics.lr = lr;
    history.push_back(metrics);
    if (on_step) on_step(metrics);
  }
  return history;
}

}  // namespace grpo
