// Supervised fine-tuning: cross-entropy on response tokens only, averaged over every response
// token of the global batch (all ranks), then the same AdamW/schedule/clipping as GRPO.

#include <chrono>
#include <cmath>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "core/logging.h"
#include "trainer/data.h"
#include "trainer/train_common.h"
#include "trainer/trainers.h"

namespace grpo {

RunSummary run_sft(const Config& config) {
  check_step_split(config.trainer, 1, world().size(), "ranks");
  auto run = start_training_run(config, "sft");
  Communicator& comm = *run->comm;
  auto [data, order] = load_training_data(*run);

  const int64_t batch = config.trainer.prompts_per_step;
  const ItemShare mine = share_of(batch, comm.rank(), comm.size());
  const int64_t begin = mine.begin, end = mine.end;
  const int64_t eos = run->policy.stop_token_ids.empty() ? run->policy.pad_id : run->policy.stop_token_ids.back();
  RunSummary summary;
  summary.first_step = run->step;
  const auto started = std::chrono::steady_clock::now();
  double step_seconds = 0;

  while (steps_remain(*run)) {
    const auto step_start = std::chrono::steady_clock::now();
    const std::vector<int64_t> indices = order.next(batch);  // the same global batch on every rank
    std::vector<std::vector<int64_t>> prompts, responses;
    for (int64_t i = begin; i < end; ++i) {
      const Example& e = data.examples[static_cast<size_t>(indices[static_cast<size_t>(i)])];
      prompts.push_back(encode_prompt(run->policy, e.prompt));
      std::vector<int64_t> response = run->policy.tokenizer->encode(e.response);
      response.push_back(eos);
      responses.push_back(std::move(response));
    }
    const PaddedBatch b = pad_batch(prompts, responses, run->policy.pad_id);
    std::vector<double> counts{b.completion_mask.sum().item<double>()};
    comm.all_reduce_sum(counts);  // global response tokens

    // Gradients accumulate over micro-batches; each one's loss is divided by the global count, so
    // their sum is the whole batch's mean.
    run->optimizer->zero_grad();
    const int64_t rows = b.prompt_ids.size(0);
    const int64_t micro = config.trainer.micro_batch_size > 0 ? std::min(config.trainer.micro_batch_size, rows) : rows;
    // Summed on the device and read once, so that no micro-batch waits on it.
    check_same_pass_count(*run, (rows + micro - 1) / micro);
    const at::Tensor nll_local = at::zeros({}, run->params.front().options().dtype(at::kDouble));
    for (int64_t start = 0; start < rows; start += micro) {
      const int64_t len = std::min(micro, rows - start);
      const at::Tensor logp = completion_logprobs(run->policy.model, b.prompt_ids.narrow(0, start, len),
                                                 b.prompt_mask.narrow(0, start, len), b.completion_ids.narrow(0, start, len),
                                                 b.completion_mask.narrow(0, start, len), 1.0);
      const at::Tensor mask = b.completion_mask.narrow(0, start, len).to(logp.device(), at::kFloat);
      const at::Tensor nll_sum = -(logp * mask).sum();
      (nll_sum / std::max(counts[0], 1.0)).backward();
      nll_local.add_(nll_sum.detach());
    }
    const double lr = scheduled_lr(config.optimizer, run->step, config.trainer.steps);
    const double grad_norm = run->optimizer->step(lr);
    const bool finite = std::isfinite(grad_norm);
    if (!finite) log_warn("step {}: non-finite gradient norm, update skipped on every rank", run->step + 1);
    ++run->step;

    std::vector<double> sums{nll_local.item<double>()};
    comm.all_reduce_sum(sums);
    step_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
    const std::map<std::string, double> metrics = {
        {"loss", sums[0] / std::max(counts[0], 1.0)}, {"grad_norm", grad_norm}, {"lr", lr},
        {"tokens_per_s", counts[0] / std::max(step_seconds, 1e-9)}, {"step_s", step_seconds}, {"skipped", finite ? 0.0 : 1.0},
        {"epoch", static_cast<double>(order.epoch())}};
    summary.last_metrics = metrics;
    if (finish_step(*run, "sft", {{"data", order.cursor()}}, metrics, {"loss", "grad_norm", "lr", "tokens_per_s"},
                    step_seconds))
      break;
  }
  export_final(*run);
  summary.last_step = run->step;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return summary;
}

}  // namespace grpo
