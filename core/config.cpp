#include "core/config.h"

#include <fmt/format.h>

#include "core/atomic_file.h"
#include "core/config_schema.h"

namespace grpo {
namespace {

const EnumNames kDTypeNames = {{int(DType::kFloat32), "float32"}, {int(DType::kBFloat16), "bfloat16"}};
const EnumNames kDeviceNames = {{int(DeviceKind::kCpu), "cpu"}, {int(DeviceKind::kCuda), "cuda"}};
const EnumNames kUnitPrefetchNames = {{int(UnitPrefetch::kAuto), "auto"}, {int(UnitPrefetch::kOn), "on"},
                                      {int(UnitPrefetch::kOff), "off"}};
const EnumNames kOverlongPromptNames = {{int(OverlongPrompts::kError), "error"}, {int(OverlongPrompts::kSkip), "skip"}};
const EnumNames kEvalVoteNames = {{int(EvalVote::kAuto), "auto"}, {int(EvalVote::kMath), "math"},
                                   {int(EvalVote::kCode), "code"}, {int(EvalVote::kText), "text"}};
const EnumNames kRewardErrorNames = {{int(RewardErrorPolicy::kFail), "fail"},
                                     {int(RewardErrorPolicy::kScore), "score"}};
const EnumNames kPresetNames = {{int(GrpoPreset::kR1), "r1"},
                                {int(GrpoPreset::kVerl), "verl"},
                                {int(GrpoPreset::kTrl), "trl"},
                                {int(GrpoPreset::kDapo), "dapo"},
                                {int(GrpoPreset::kDrGrpo), "dr_grpo"},
                                {int(GrpoPreset::kGspo), "gspo"}};
const EnumNames kScalingNames = {{int(AdvantageScaling::kGroupStd), "group"},
                                 {int(AdvantageScaling::kBatchStd), "batch"},
                                 {int(AdvantageScaling::kNone), "none"}};
const EnumNames kSingletonNames = {{int(SingletonGroup::kZeroAdvantage), "zero"},
                                   {int(SingletonGroup::kRawReward), "raw_reward"}};
const EnumNames kPolicyLossNames = {{int(PolicyLossKind::kClip), "clip"},
                                    {int(PolicyLossKind::kCispo), "cispo"},
                                    {int(PolicyLossKind::kSapo), "sapo"}};
// verl's names are accepted as aliases so a verl config's values carry over unchanged.
const EnumNames kImportanceLevelNames = {{int(ImportanceLevel::kToken), "token"},
                                         {int(ImportanceLevel::kSequence), "sequence"}};
const EnumNames kCorrectionLevelNames = {{int(CorrectionLevel::kNone), "none"},
                                         {int(CorrectionLevel::kToken), "token"},
                                         {int(CorrectionLevel::kSequence), "sequence"}};
const EnumNames kWeightBoundsNames = {{int(WeightBounds::kTruncate), "truncate"}, {int(WeightBounds::kMask), "mask"}};
const EnumNames kRejectionNames = {
    {int(RejectionStatistic::kTokenK1), "token_k1"},     {int(RejectionStatistic::kTokenK2), "token_k2"},
    {int(RejectionStatistic::kTokenK3), "token_k3"},     {int(RejectionStatistic::kSeqSumK1), "seq_sum_k1"},
    {int(RejectionStatistic::kSeqSumK2), "seq_sum_k2"},  {int(RejectionStatistic::kSeqSumK3), "seq_sum_k3"},
    {int(RejectionStatistic::kSeqMeanK1), "seq_mean_k1"}, {int(RejectionStatistic::kSeqMeanK2), "seq_mean_k2"},
    {int(RejectionStatistic::kSeqMeanK3), "seq_mean_k3"}, {int(RejectionStatistic::kSeqMaxK2), "seq_max_k2"},
    {int(RejectionStatistic::kSeqMaxK3), "seq_max_k3"}};
const EnumNames kKlNames = {{int(KlEstimator::kK1), "k1"},   {int(KlEstimator::kAbs), "abs"},
                            {int(KlEstimator::kK2), "k2"},   {int(KlEstimator::kK3), "k3"},
                            {int(KlEstimator::kK1), "kl"},   {int(KlEstimator::kK2), "mse"},
                            {int(KlEstimator::kK3), "low_var_kl"}};
const EnumNames kAggregationNames = {{int(LossAggregation::kTokenMean), "token-mean"},
                                     {int(LossAggregation::kSeqMeanTokenSum), "seq-mean-token-sum"},
                                     {int(LossAggregation::kSeqMeanTokenMean), "seq-mean-token-mean"},
                                     {int(LossAggregation::kSeqMeanTokenSumNorm), "seq-mean-token-sum-norm"}};
// The KL term's aggregation: one of the modes, or `same` (-1) as the policy loss.
const EnumNames kKlAggregationNames = {{-1, "same"},
                                       {int(LossAggregation::kTokenMean), "token-mean"},
                                       {int(LossAggregation::kSeqMeanTokenSum), "seq-mean-token-sum"},
                                       {int(LossAggregation::kSeqMeanTokenMean), "seq-mean-token-mean"},
                                       {int(LossAggregation::kSeqMeanTokenSumNorm), "seq-mean-token-sum-norm"}};
const EnumNames kScheduleNames = {{int(LrSchedule::kConstant), "constant"}, {int(LrSchedule::kCosine), "cosine"}};
const EnumNames kLogLevelNames = {{int(LogLevel::kDebug), "debug"},
                                  {int(LogLevel::kInfo), "info"},
                                  {int(LogLevel::kWarn), "warn"},
                                  {int(LogLevel::kError), "error"}};

void describe(ConfigVisitor& v, ModelConfig& c) {
  v.visit(field("path", "Hugging Face checkpoint directory (config.json, model.safetensors, tokenizer.json), "
                        "or `builtin:NAME` for a model the project defines. Needed by the verbs that use a model."),
          c.path);
  v.visit(field("dtype", "Parameter and activation dtype."), c.dtype, kDTypeNames);
  v.visit(field("device", "Where the model runs; `cuda` puts each rank on GPU (local rank mod visible GPUs), needs a CUDA LibTorch."), c.device, kDeviceNames);
  v.visit(field("chat_template", "How prompts become model input: \"\" as written, or qwen3, deepseek_v3, r1_zero, "
                                 "tokenizer (the tokenizer's own template)."),
          c.chat_template);
}

void describe(ConfigVisitor& v, DataConfig& c) {
  v.visit(field("train_path", "Training set: a JSONL file, or builtin:addition?n=..&digits=a-b&hard_digits=c-d&"
                              "hard_fraction=f&seed=s (docs/training.md)."),
          c.train_path);
  v.visit(field("eval_path", "Held-out set, in the same forms."), c.eval_path);
  v.visit(field("dev_path", "Set evaluated during training (eval.every_steps), in the same forms; \"\" = "
                            "data.eval_path. Keep it apart from the held-out set when eval.stop_at_pass_at_1 "
                            "steers training."),
          c.dev_path);
  v.visit(field("prompt_field", "Field of each JSONL record that holds the prompt."), c.prompt_field);
  v.visit(field("answer_field", "Field of each JSONL record that holds the gold answer."), c.answer_field);
  v.visit(field("response_field", "Field that holds a worked solution (the SFT target)."), c.response_field);
  v.visit(field("shuffle", "Shuffle the training set each epoch (seeded by trainer.seed)."), c.shuffle);
  v.visit(field("skip_malformed", "Skip (and count) malformed JSONL lines instead of stopping with their line number."),
          c.skip_malformed);
  v.visit(field("overlong_prompts", "A training prompt whose tokens plus rollout.max_new_tokens exceed the model's "
                                    "context (max_position_embeddings): `error` stops at load naming file:line and the "
                                    "lengths; `skip` drops it and logs the count."),
          c.overlong_prompts, kOverlongPromptNames);
}

void describe(ConfigVisitor& v, RolloutConfig& c) {
  v.visit(field("max_new_tokens", "Most tokens sampled per completion.").at_least(1), c.max_new_tokens);
  v.visit(field("temperature", "Sampling temperature; 0 samples greedily.").at_least(0), c.temperature);
  v.visit(field("top_p", "Nucleus sampling: smallest set of tokens whose probability reaches top_p.")
              .above(0)
              .at_most(1),
          c.top_p);
  v.visit(field("top_k", "Keep only the k most likely tokens; 0 keeps all.").at_least(0), c.top_k);
  v.visit(field("min_p", "Drop tokens less likely than min_p times the most likely one.").at_least(0).below(1),
          c.min_p);
  v.visit(field("stop", "Stop strings, in addition to the tokenizer's end-of-sequence token."), c.stop);
  v.visit(field("max_concurrent_prompts", "Prompts decoded at once, each with its samples; a prompt whose samples "
                                          "have all finished hands its slot to the next (continuous batching). "
                                          "0 = all of a rank's prompts in training, 32 in evaluation.")
              .at_least(0),
          c.max_concurrent_prompts);
  v.visit(field("readback_interval", "Decode steps between reads of the device state (finished rows, stop "
                                     "strings); larger waits on the device less often and wastes up to this "
                                     "many steps per finished row.")
              .at_least(1),
          c.readback_interval);
  v.visit(field("max_staleness", "With trainer.rollout_ranks > 0: how many policy versions the weights that "
                                 "sampled a batch may lag behind the weights that train on it. 0 = on-policy (the "
                                 "rollout ranks wait for each update; same results as colocated); 1 = one-step-off "
                                 "(the rollout ranks sample the next batch while the trainers train on this one). "
                                 "See docs/training.md.")
              .at_least(0),
          c.max_staleness);
}

void describe(ConfigVisitor& v, RewardFunctionConfig& c) {
  v.visit(field("name", "Registered reward: math, format, language, length, code, plugin, subprocess, reward_model.").is_required(),
          c.name);
  v.visit(field("label", "Name in metrics and output (default: the reward's name)."), c.label);
  v.visit(field("weight", "Weight in the total reward."), c.weight);
  v.visit(field("options", "The reward's options (docs/rewards.md)."), c.options);
}

void describe(ConfigVisitor& v, RewardConfig& c) {
  v.visit_list(field("functions", "Reward functions; the total is their weighted sum."), c.functions,
               [](ConfigVisitor& item, RewardFunctionConfig& f) { describe(item, f); });
  v.visit(field("threads", "Threads that score samples; 0 uses every core.").at_least(0), c.threads);
  v.visit(field("timeout_s", "Wall-clock limit for scoring one sample.").above(0), c.timeout_s);
  v.visit(field("on_error", "A reward that throws or times out: `fail` stops the step naming the sample; "
                            "`score` gives it error_score and counts it."),
          c.on_error, kRewardErrorNames);
  v.visit(field("error_score", "Score of a failed sample when on_error is `score`."), c.error_score);
}

void describe(ConfigVisitor& v, AdvantageOptions& c) {
  v.visit(field("scaling", "Divide the centred reward by the group's std (`group`), the whole batch's std "
                           "(`batch`), or not at all (`none`, Dr. GRPO)."),
          c.scaling, kScalingNames);
  v.visit(field("std_unbiased", "Use Bessel's correction (n - 1) in the standard deviation."), c.std_unbiased);
  v.visit(field("std_epsilon", "Added to the std before dividing.").at_least(0), c.std_epsilon);
  v.visit(field("singleton_group", "Advantage of a group of one sample: `zero` (TRL) or the raw reward "
                                   "(`raw_reward`: mean 0, std 1, as verl)."),
          c.singleton_group, kSingletonNames);
}

void describe(ConfigVisitor& v, PolicyLossOptions& c) {
  v.visit(field("kind", "Per-token policy loss: clipped surrogate, CISPO or SAPO."), c.kind, kPolicyLossNames);
  v.visit(field("importance_level", "Importance ratio: per token (`token`), or GSPO's per sequence (`sequence`: "
                                    "exp of the row's mean log-ratio, shared by its tokens)."),
          c.importance_level, kImportanceLevelNames);
  v.visit(field("eps_low", "Lower clip range: the ratio is clipped at 1 - eps_low.").at_least(0).below(1),
          c.eps_low);
  v.visit(field("eps_high", "Upper clip range: the ratio is clipped at 1 + eps_high (clip-higher when larger "
                            "than eps_low). For CISPO, the cap on the detached ratio.")
              .at_least(0),
          c.eps_high);
  v.visit(field("log_ratio_clamp", "Token level: clamp logp - old_logp to [-c, c] before exp (verl uses 20).").above(0),
          c.log_ratio_clamp);
  v.visit(field("sequence_log_ratio_cap", "Sequence level: the row's mean log-ratio is capped at this value (verl's "
                                          "GSPO uses 10).")
              .above(0),
          c.sequence_log_ratio_cap);
  v.visit(field("dual_clip_c", "Dual clip: for A < 0 the loss is at most -A * c (verl uses 3).").above(1),
          c.dual_clip_c);
  v.visit(field("ratio_cap", "Two-sided clip delta: the unclipped ratio is capped at delta (INTELLECT-2, TRL "
                             "`delta`).")
              .above(1),
          c.ratio_cap);
  v.visit(field("sapo_tau_pos", "SAPO gate temperature for A > 0.").above(0), c.sapo_tau_pos);
  v.visit(field("sapo_tau_neg", "SAPO gate temperature for A <= 0.").above(0), c.sapo_tau_neg);
}

void describe(ConfigVisitor& v, KlOptions& c) {
  v.visit(field("beta", "Weight of the KL penalty to the reference model; 0 skips the reference model.")
              .at_least(0),
          c.beta);
  v.visit(field("estimator", "KL estimator per token (verl names accepted)."), c.estimator, kKlNames);
  v.visit(field("log_ratio_clamp", "k3 only: clamp ref - logp to [-c, c] before exp (verl uses 20).").above(0),
          c.log_ratio_clamp);
  v.visit(field("value_clamp", "k3 only: clamp the per-token estimate to [-c, c] (verl uses 10).").above(0),
          c.value_clamp);
}

void describe(ConfigVisitor& v, AggregationOptions& c) {
  v.visit(field("mode", "How per-token losses become one number (docs/algorithms.md)."), c.mode,
          kAggregationNames);
  v.visit(field("count_empty_sequences", "Sequences without valid tokens count in sequence means (TRL)."),
          c.count_empty_sequences);
  v.visit(field("seq_mean_epsilon", "Added to each sequence's token count in seq-mean-token-mean.").at_least(0),
          c.seq_mean_epsilon);
  v.visit(field("loss_scale_factor", "Divisor of seq-mean-token-sum-norm; null: the trainer uses "
                                     "rollout.max_new_tokens (one constant on every rank).")
              .above(0),
          c.loss_scale_factor);
  v.visit(field("norm_per_sequence", "seq-mean-token-sum-norm also divides by the number of sequences "
                                     "(Dr. GRPO as TRL writes it)."),
          c.norm_per_sequence);
  int kl_mode = c.kl_mode ? int(*c.kl_mode) : -1;
  v.visit_enum(field("kl_mode", "Aggregation of the KL term: `same` as the policy loss, or another mode (verl's GSPO "
                                "aggregates its policy loss seq-mean-token-mean and the KL with loss_agg_mode)."),
               kl_mode, kKlAggregationNames);
  c.kl_mode = kl_mode < 0 ? std::nullopt : std::optional<LossAggregation>(static_cast<LossAggregation>(kl_mode));
}

void describe(ConfigVisitor& v, RejectionRule& c) {
  v.visit(field("statistic", "Per-token k1 = log(pi_sampler / pi_old), k2 = k1^2 / 2 or k3 = r - 1 - log r (r = "
                             "pi_old / pi_sampler), tested per token (`token_*`), or per row as its sum (`seq_sum_*`), "
                             "mean (`seq_mean_*`) or max (`seq_max_*`).")
              .is_required(),
          c.statistic, kRejectionNames);
  v.visit(field("lower", "Lowest value kept; for k1 statistics a bound on exp(k1) = pi_sampler / pi_old. null = none.")
              .above(0),
          c.lower);
  v.visit(field("upper", "Highest value kept; for k1 statistics a bound on exp(k1). null = none.").above(0), c.upper);
}

void describe(ConfigVisitor& v, RolloutCorrectionOptions& c) {
  v.visit(field("level", "Importance weight pi_old / pi_sampler from the sampling log-probs: `none`, per `token`, "
                         "or per `sequence` (the product over the row)."),
          c.level, kCorrectionLevelNames);
  v.visit(field("bounds", "A weight outside [weight_min, weight_max] is clamped to the bound (`truncate`, TIS) or "
                          "set to 0 (`mask`, masked IS)."),
          c.bounds, kWeightBoundsNames);
  v.visit(field("weight_min", "Lower bound of the weight; null = none.").at_least(0), c.weight_min);
  v.visit(field("weight_max", "Upper bound of the weight (verl's rollout_is_threshold, TRL's clip max); null = none.")
              .above(0),
          c.weight_max);
  v.visit(field("log_weight_clamp", "Clamp the log-weight to [-c, c] before exp (verl uses 20).").above(0),
          c.log_weight_clamp);
  v.visit(field("batch_normalize", "Divide the bounded weights by their mean over the batch (verl)."),
          c.batch_normalize);
  v.visit_list(field("rejection", "Rejection sampling: a token is kept only when every rule keeps it; rejected "
                                  "tokens leave the loss, its normalizers and its metrics."),
               c.rejection, [](ConfigVisitor& item, RejectionRule& r) { describe(item, r); });
}

void describe(ConfigVisitor& v, GrpoConfig& c) {
  v.visit(field("preset", "Recipe whose values every option below starts from (docs/algorithms.md)."), c.preset,
          kPresetNames);
  if (v.assigned_last_field()) apply_grpo_preset(c.preset, c);
  v.visit(field("group_size", "G: completions sampled per prompt.").at_least(1), c.group_size);
  v.visit(field("updates_per_batch", "mu: policy updates on each rollout batch.").at_least(1), c.updates_per_batch);
  v.visit(field("filter_zero_std_groups", "Leave out groups whose samples all score the same: they carry no signal "
                                          "and would only dilute the token mean (DAPO's dynamic sampling, without "
                                          "resampling)."),
          c.filter_zero_std_groups);
  v.visit(field("max_generation_rounds", "With filter_zero_std_groups: draw and sample up to this many batches of "
                                         "prompts_per_step prompts per step until prompts_per_step groups with signal "
                                         "are kept (DAPO's dynamic sampling with refill). 1 = only leave them out.")
              .at_least(1),
          c.max_generation_rounds);
  v.visit(field("max_logp_mismatch", "Stop the run when the mean absolute difference of sampling and trainer "
                                     "log-probs over a step's tokens exceeds this; null = never. Sampler and trainer share the model "
                                     "code, so in fp32 it is ~1e-7 (docs/training.md).")
              .above(0),
          c.max_logp_mismatch);
  v.section("advantage", "Group-relative advantages from rewards.", [&](ConfigVisitor& s) { describe(s, c.advantage); });
  v.section("policy_loss", "The per-token policy objective.", [&](ConfigVisitor& s) { describe(s, c.policy_loss); });
  v.section("kl", "KL penalty to the frozen reference model.", [&](ConfigVisitor& s) { describe(s, c.kl); });
  v.section("aggregation", "Loss aggregation over tokens and sequences.",
            [&](ConfigVisitor& s) { describe(s, c.aggregation); });
  v.section("rollout_correction", "Importance-sampling correction and rejection from the sampling log-probs.",
            [&](ConfigVisitor& s) { describe(s, c.rollout_correction); });
}

void describe(ConfigVisitor& v, OptimizerConfig& c) {
  v.visit(field("lr", "Peak learning rate of AdamW.").above(0), c.lr);
  v.visit(field("beta1", "AdamW first-moment decay.").at_least(0).below(1), c.beta1);
  v.visit(field("beta2", "AdamW second-moment decay.").at_least(0).below(1), c.beta2);
  v.visit(field("eps", "AdamW denominator epsilon.").above(0), c.eps);
  v.visit(field("weight_decay", "Decoupled weight decay.").at_least(0), c.weight_decay);
  v.visit(field("warmup_steps", "Linear warm-up from 0 to lr over this many steps.").at_least(0), c.warmup_steps);
  v.visit(field("schedule", "Learning rate after warm-up: `constant`, or `cosine` decay to lr * min_lr_ratio."),
          c.schedule, kScheduleNames);
  v.visit(field("min_lr_ratio", "Final learning rate of the cosine schedule, as a fraction of lr.")
              .at_least(0)
              .at_most(1),
          c.min_lr_ratio);
  v.visit(field("max_grad_norm", "Clip the global gradient norm to this value; 0 disables clipping.").at_least(0),
          c.max_grad_norm);
}

void describe(ConfigVisitor& v, GuardConfig& c) {
  v.visit(field("zero_variance_steps", "Stop when every group's rewards are all equal (no learning signal) for this "
                                       "many steps in a row.")
              .at_least(0),
          c.zero_variance_steps);
  v.visit(field("max_reward_error_fraction", "Stop when more than this fraction of reward evaluations failed (threw, "
                                             "timed out, non-finite) over the last window_steps steps.")
              .at_least(0)
              .at_most(1),
          c.max_reward_error_fraction);
  v.visit(field("max_skipped_update_fraction", "Stop when more than this fraction of optimizer updates were skipped "
                                               "(non-finite gradients) over the last window_steps steps.")
              .at_least(0)
              .at_most(1),
          c.max_skipped_update_fraction);
  v.visit(field("window_steps", "Steps the two fractions are taken over (fewer at the start of a run).").at_least(1),
          c.window_steps);
}

void describe(ConfigVisitor& v, TrainerConfig& c) {
  v.visit(field("steps", "Optimizer steps to train.").at_least(1), c.steps);
  v.visit(field("prompts_per_step", "Prompts per step over all ranks (each sampled group_size times).").at_least(1),
          c.prompts_per_step);
  v.visit(field("seed", "Seed of every random choice (data order, sampling, initialization).").at_least(0), c.seed);
  v.visit(field("run_dir", "Directory for the resolved config, metrics, samples and checkpoints."), c.run_dir);
  v.visit(field("threads", "Intra-op threads per rank; 0 = available cores divided by local ranks.").at_least(0),
          c.threads);
  v.visit(field("mask_truncated", "GRPO: completions cut at rollout.max_new_tokens get no gradient."), c.mask_truncated);
  v.visit(field("max_seconds", "Stop (and checkpoint) after this much wall-clock time; 0 = no limit.").at_least(0),
          c.max_seconds);
  v.visit(field("micro_batch_size", "Sequences per forward/backward pass (GRPO rollouts, SFT examples); gradients "
                                    "accumulate over micro-batches into one optimizer step. 0 = this rank's whole batch.")
              .at_least(0),
          c.micro_batch_size);
  v.visit(field("zero_stage", "Sharding over ranks (DeepSpeed's ZeRO stages): 0 = AdamW state whole on every "
                              "rank; 1 = split over ranks; 2 = gradients reduce-scattered too (each rank still "
                              "holds the whole model and, during backward, its whole local gradient); 3 = "
                              "parameters sharded per decoder layer too (FSDP), gathered for each pass and freed "
                              "after, so each rank holds about 1/N of the model state. See docs/training.md.")
              .at_least(0)
              .at_most(3),
          c.zero_stage);
  v.visit(field("collective_timeout_s", "A rank that waits longer than this in one collective or barrier (a peer "
                                        "stopped, hung or lost) logs the collective and the step and aborts the whole "
                                        "job; generous, since peers may be in a long rollout. 0 = wait forever.")
              .at_least(0),
          c.collective_timeout_s);
  v.visit(field("rollout_ranks", "GRPO: the last K ranks only generate and score rollouts, the others only train "
                                 "and send their weights to them after each update (disaggregated layout; "
                                 "rollout.max_staleness bounds the lag). 0 = colocated: every rank generates, "
                                 "then trains. Must leave at least one trainer rank. See docs/training.md.")
              .at_least(0),
          c.rollout_ranks);
  v.section("guards", "Stop a run that cannot learn (exit 1, naming the guard); each warns the first time its "
                      "condition is seen. 0 turns a guard off.",
            [&](ConfigVisitor& s) { describe(s, c.guards); });
  v.visit(field("param_dtype", "Stage 3: the dtype parameters are gathered in and passes compute in. The fp32 "
                               "master shard and fp32 AdamW moments hold the truth; bfloat16 halves the gathered "
                               "parameters. Stages 0-2 compute in model.dtype."),
          c.param_dtype, kDTypeNames);
  v.visit(field("reduce_dtype", "Stage 3: the dtype gradients are reduce-scattered in (float32 keeps the sums "
                                "exact to float rounding)."),
          c.reduce_dtype, kDTypeNames);
  v.visit(field("prefetch", "Stage 3: start the next unit's all-gather before the current unit computes, so "
                            "the transfer overlaps compute (NCCL on a side stream). Costs one more gathered unit "
                            "of memory (docs/training.md). auto = on when parameters are on CUDA; on CPU, MPI "
                            "moves the data only inside MPI calls, so there is nothing to overlap."),
          c.prefetch, kUnitPrefetchNames);
  v.visit(field("activation_checkpointing", "Keep only each decoder layer's input in forward and recompute the "
                                            "layer in backward (less activation memory, about a third more "
                                            "compute). Stage 3 always recomputes."),
          c.activation_checkpointing);
}

void describe(ConfigVisitor& v, EvalDatasetConfig& c) {
  v.visit(field("name", "Row name in the printed table and the results JSON.").is_required(), c.name);
  v.visit(field("path", "JSONL file (GSM8K, MATH and similar work as they are), or builtin:addition?...").is_required(),
          c.path);
  v.visit(field("prompt_field", "Field holding the problem; \"\" = data.prompt_field."), c.prompt_field);
  v.visit(field("answer_field", "Field holding the gold answer; \"\" = data.answer_field."), c.answer_field);
  v.visit(field("prompt_template", "The prompt the model sees: text in which {name} is replaced by the record's field "
                                   "`name` (a list of strings by its lines); other braces stay as written. \"\" = "
                                   "the prompt field as written."),
          c.prompt_template);
  v.visit(field("skip", "Records dropped from the front of the file (MBPP's test split: skip 10, limit 500).")
              .at_least(0),
          c.skip);
  v.visit(field("limit", "Records kept after `skip`; 0 = all.").at_least(0), c.limit);
  v.visit_list(field("rewards", "Reward functions for this set, as reward.functions; empty = reward.functions, "
                                "and the math reward when that is empty too."),
               c.rewards, [](ConfigVisitor& item, RewardFunctionConfig& f) { describe(item, f); });
  v.visit(field("correct_rewards", "Labels of the rewards that decide whether a sample is correct (all must agree); "
                                   "empty = every `math` and `code` reward of the set, else the weighted total."),
          c.correct_rewards);
  v.visit(field("correct_threshold", "A deciding reward that reports a `correct` component (math) is correct when it "
                                     "is 1; any other (code: share of tests passed) when its score is at least this; "
                                     "with no deciding reward, the weighted total."),
          c.correct_threshold);
  v.visit(field("vote", "cons@k groups answers: `math` (final answers, by equivalence), `code` (the extracted "
                        "program, trailing spaces and blank lines ignored), `text` (the text after </think>, "
                        "trimmed); `auto` = math with a math reward, else code with a code reward, else text."),
          c.vote, kEvalVoteNames);
}

void describe(ConfigVisitor& v, EvalConfig& c) {
  v.visit_list(field("datasets", "Held-out sets evaluated in one call, one table row each; empty = data.eval_path."),
               c.datasets, [](ConfigVisitor& item, EvalDatasetConfig& d) { describe(item, d); });
  v.visit(field("samples", "k: completions sampled per problem (pass@1 is their mean, cons@k their majority vote; "
                           "DeepSeek-R1 reports cons@64).")
              .at_least(1),
          c.samples);
  v.visit(field("temperature", "Sampling temperature (DeepSeek-R1 evaluates at 0.6).").at_least(0), c.temperature);
  v.visit(field("top_p", "Nucleus sampling (DeepSeek-R1: 0.95).").above(0).at_most(1), c.top_p);
  v.visit(field("max_new_tokens", "Longest completion in evaluation (DeepSeek-R1: 32768); 0 = rollout.max_new_tokens.")
              .at_least(0),
          c.max_new_tokens);
  v.visit(field("max_problems", "Evaluate only the first N problems of each set; 0 = all.").at_least(0), c.max_problems);
  v.visit(field("output", "Where the results JSON goes (written atomically, after every set); \"\" = "
                          "<trainer.run_dir>/eval.json."),
          c.output);
  v.visit(field("every_steps", "During sft and train: evaluate data.dev_path every N steps with eval.samples, "
                               "eval.temperature and eval.top_p (dev/pass@1 and more in metrics.jsonl); 0 = never.")
              .at_least(0),
          c.every_steps);
  v.visit(field("stop_at_pass_at_1", "During sft and train: end training (checkpoint and final export) once "
                                     "eval.stop_consecutive evaluations of eval.every_steps in a row reach this dev "
                                     "pass@1; null = never.")
              .at_least(0)
              .at_most(1),
          c.stop_at_pass_at_1);
  v.visit(field("stop_consecutive", "Dev evaluations in a row that must reach eval.stop_at_pass_at_1 before "
                                    "training ends (1 = the first one; more keeps a lucky evaluation from ending it).")
              .at_least(1),
          c.stop_consecutive);
}

void describe(ConfigVisitor& v, SampleConfig& c) {
  v.visit(field("dataset", "Prompts to sample: a JSONL file (data.* field mapping) or builtin:addition?...; \"\" = "
                           "data.train_path."),
          c.dataset);
  v.visit(field("samples_per_prompt", "k: completions sampled per prompt.").at_least(1), c.samples_per_prompt);
  v.visit(field("max_prompts", "Sample only the first N prompts; 0 = all.").at_least(0), c.max_prompts);
  v.visit(field("prompts_per_part", "Prompts sampled, filtered and written together (one part file); a killed "
                                    "run resumes at the first unwritten part.")
              .at_least(1),
          c.prompts_per_part);
  v.visit(field("min_reward", "Keep a sample only when its weighted reward total (reward.functions) is at least "
                              "this; null = no threshold."),
          c.min_reward);
  v.visit(field("required_components", "Reward components, as label.component (math.correct, format.answer), "
                                       "that must be 1 for a sample to be kept."),
          c.required_components);
  v.visit(field("require_format", "Keep only strictly formatted samples: <think>...</think><answer>...</answer> "
                                  "and nothing else."),
          c.require_format);
  v.visit(field("language", "Language the chain of thought must be written in (en, zh, ...; the language "
                            "reward's scripts); \"\" = no language filter."),
          c.language);
  v.visit(field("min_language_share", "With `language`: least share of the chain of thought's words in it "
                                      "(a text without words passes).")
              .at_least(0)
              .at_most(1),
          c.min_language_share);
  v.visit(field("max_tokens", "Drop completions longer than this many tokens; 0 = no limit.").at_least(0),
          c.max_tokens);
  v.visit(field("drop_truncated", "Drop completions cut at rollout.max_new_tokens (no stop token or string)."),
          c.drop_truncated);
  v.visit(field("ngram_size", "n of the repetition filter, in tokens.").at_least(1), c.ngram_size);
  v.visit(field("max_repeated_ngram_share", "Drop a completion when more than this share of its token n-grams "
                                            "repeat an earlier one; 1 = off.")
              .at_least(0)
              .at_most(1),
          c.max_repeated_ngram_share);
  v.visit(field("deduplicate", "Drop a completion identical to one already kept for the same prompt."),
          c.deduplicate);
  v.visit(field("max_kept_per_prompt", "Keep at most this many samples per prompt (the first ones to pass); "
                                       "0 = all.")
              .at_least(0),
          c.max_kept_per_prompt);
  v.visit(field("output", "The SFT JSONL written; \"\" = <trainer.run_dir>/samples.jsonl."), c.output);
}

void describe(ConfigVisitor& v, DistillConfig& c) {
  v.visit(field("teacher_path", "The frozen teacher: a Hugging Face directory (e.g. another run's `final`) or "
                                "`builtin:NAME`, with the student's vocabulary. \"\" = no distillation."),
          c.teacher_path);
  v.visit(field("coefficient", "Weight of the per-token reverse-KL advantage -(log pi_student - log pi_teacher).")
              .above(0),
          c.options.coefficient);
  v.visit(field("reward_weight", "Weight of the group-normalized reward advantage added to it (reward.functions); "
                                 "0 = pure distillation (rewards are still computed and logged).")
              .at_least(0),
          c.options.reward_weight);
}

void describe(ConfigVisitor& v, CheckpointConfig& c) {
  v.visit(field("every_steps", "Save a checkpoint every N steps; 0 saves only at the end.").at_least(0),
          c.every_steps);
  v.visit(field("keep_last", "Keep the newest K checkpoints up to the current step; the one just written is "
                             "always kept.").at_least(1),
          c.keep_last);
  v.visit(field("resume", "none (start afresh; refused if the run directory holds checkpoints, unless --overwrite), "
                          "auto (the newest complete checkpoint in the run directory, or afresh if there is none), "
                          "or a checkpoint path. --resume sets it."),
          c.resume);
}

void describe(ConfigVisitor& v, LoggingConfig& c) {
  v.visit(field("level", "Least severe message printed."), c.level, kLogLevelNames);
  v.visit(field("all_ranks", "Every rank prints info messages, not only rank 0."), c.all_ranks);
  v.visit(field("every_steps", "Print a progress line every N steps.").at_least(1), c.every_steps);
}

template <class Section>
void add_section(ConfigVisitor& v, std::string_view name, std::string_view doc, Section& section) {
  v.section(name, doc, [&](ConfigVisitor& s) { describe(s, section); });
}

void describe(ConfigVisitor& v, Config& c) {
  add_section(v, "model", "The policy model (the reference model is a frozen copy of it).", c.model);
  add_section(v, "data", "Datasets and their field mapping.", c.data);
  add_section(v, "rollout", "Sampling of completions.", c.rollout);
  add_section(v, "reward", "How reward functions are run.", c.reward);
  add_section(v, "grpo", "The GRPO objective: advantages, policy loss, KL and aggregation.", c.grpo);
  add_section(v, "optimizer", "AdamW and the learning-rate schedule.", c.optimizer);
  add_section(v, "trainer", "The training loop.", c.trainer);
  add_section(v, "checkpoint", "Checkpoint frequency and retention.", c.checkpoint);
  add_section(v, "eval", "Evaluation: pass@1 over k samples, pass@k, cons@k.", c.eval);
  add_section(v, "sample", "Rejection sampling (`grpo sample`): k samples per prompt, scored, filtered into an SFT "
                           "set.",
              c.sample);
  add_section(v, "distill", "On-policy distillation in `grpo train`: a frozen teacher's per-token log-probs of "
                            "the student's samples give a reverse-KL advantage.",
              c.distill);
  add_section(v, "logging", "Console and file logging.", c.logging);
}

}  // namespace

void apply_grpo_preset(GrpoPreset preset, GrpoConfig& grpo) {
  AdvantageOptions advantage;
  PolicyLossOptions policy;
  KlOptions kl;
  AggregationOptions aggregation;
  switch (preset) {
    case GrpoPreset::kR1:
      // DeepSeekMath/R1 objective: per-sequence token mean, k3 KL; beta 0.001 as in DeepSeek-R1.
      break;  // the struct defaults are this recipe
    case GrpoPreset::kVerl:
      policy.log_ratio_clamp = 20.0;
      policy.dual_clip_c = 3.0;
      kl.log_ratio_clamp = 20.0;
      kl.value_clamp = 10.0;
      aggregation.mode = LossAggregation::kTokenMean;
      break;
    case GrpoPreset::kTrl:
      advantage.std_epsilon = 1e-4;
      advantage.singleton_group = SingletonGroup::kZeroAdvantage;
      kl.beta = 0.0;
      aggregation.mode = LossAggregation::kTokenMean;  // TRL's default loss_type `dapo`
      aggregation.count_empty_sequences = true;
      aggregation.seq_mean_epsilon = 0.0;
      break;
    case GrpoPreset::kDapo:
      policy.eps_high = 0.28;
      kl.beta = 0.0;
      aggregation.mode = LossAggregation::kTokenMean;
      break;
    case GrpoPreset::kDrGrpo:
      advantage.scaling = AdvantageScaling::kNone;
      kl.beta = 0.0;
      aggregation.mode = LossAggregation::kSeqMeanTokenSumNorm;
      aggregation.norm_per_sequence = true;
      break;
    case GrpoPreset::kGspo:
      // verl's GSPO recipe: sequence ratio capped at e^10, the paper's clip range 3e-4 / 4e-4, no KL.
      policy.importance_level = ImportanceLevel::kSequence;
      policy.sequence_log_ratio_cap = 10.0;
      policy.eps_low = 3e-4;
      policy.eps_high = 4e-4;
      kl.beta = 0.0;
      break;
  }
  grpo.advantage = advantage;
  grpo.policy_loss = policy;
  grpo.kl = kl;
  grpo.aggregation = aggregation;
}

StatusOr<Config> parse_config(const std::string& yaml_text, const std::string& source_name,
                              const std::vector<std::string>& overrides) {
  Config config;
  const YamlReadResult result =
      read_yaml_config(yaml_text, source_name, overrides, [&](ConfigVisitor& v) { describe(v, config); });
  if (!result.errors.empty()) return Status::error(fmt::format("{}", fmt::join(result.errors, "\n")));
  return config;
}

StatusOr<Config> load_config(const std::string& path, const std::vector<std::string>& overrides) {
  StatusOr<std::string> text = read_file(path);
  if (!text) return text.status();
  return parse_config(*text, path, overrides);
}

std::string config_to_yaml(const Config& config) {
  Config copy = config;  // visitors take mutable references; writers never change values
  return write_yaml_config([&](ConfigVisitor& v) { describe(v, copy); });
}

std::string config_reference_markdown() {
  Config defaults;
  return write_markdown_reference([&](ConfigVisitor& v) { describe(v, defaults); });
}

}  // namespace grpo
