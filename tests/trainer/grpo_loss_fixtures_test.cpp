// Every case in GRPO_LOSS_FIXTURES (default ../shared/fixtures/grpo) and in GRPO_OFFPOLICY_FIXTURES
// (default ../shared/fixtures/grpo_offpolicy: GSPO and rollout importance-sampling correction from
// sampling log-probs): verl and TRL outputs, float64, produced by the peers' own code. Each peer's settings are expressed as a grpo-cpp
// YAML config and parsed by the real config parser, so the test also proves that both peers'
// behaviour is a configuration. Tolerance (fixture README): |got - want| <= 1e-9 |want| + 1e-12.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/config.h"
#include "tests/support/fixtures.h"
#include "trainer/grpo_loss.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string fixture_dir() { return testing::shared_path("GRPO_LOSS_FIXTURES", "fixtures/grpo"); }
std::string offpolicy_fixture_dir() { return testing::shared_path("GRPO_OFFPOLICY_FIXTURES", "fixtures/grpo_offpolicy"); }

std::vector<std::string> json_files(const std::string& dir) {
  return testing::sorted_entries(dir, [](const fs::directory_entry& e) { return e.path().extension() == ".json"; });
}

std::vector<std::string> fixture_files() {
  std::vector<std::string> files = json_files(fixture_dir());
  std::error_code same_error;
  if (!fs::equivalent(fixture_dir(), offpolicy_fixture_dir(), same_error)) {  // one directory named twice runs once
    const std::vector<std::string> offpolicy = json_files(offpolicy_fixture_dir());
    files.insert(files.end(), offpolicy.begin(), offpolicy.end());
  }
  return files;
}

// The case's file name, with _2, _3, ... when an earlier directory has a case of the same name.
std::string case_name(const ::testing::TestParamInfo<std::string>& info) {
  const std::vector<std::string> files = fixture_files();
  int earlier = 0;
  for (size_t i = 0; i < info.index && i < files.size(); ++i)
    if (fs::path(files[i]).stem() == fs::path(info.param).stem()) ++earlier;
  const std::string name = testing::fixture_case_name(info);
  return earlier == 0 ? name : name + "_" + std::to_string(earlier + 1);
}

at::Tensor to_tensor(const json& value) {
  std::vector<double> flat;
  std::vector<int64_t> shape;
  if (value.is_array() && !value.empty() && value[0].is_array()) {
    shape = {static_cast<int64_t>(value.size()), static_cast<int64_t>(value[0].size())};
    for (const auto& row : value)
      for (const auto& x : row) flat.push_back(x.get<double>());
  } else {
    shape = {static_cast<int64_t>(value.size())};
    for (const auto& x : value) flat.push_back(x.get<double>());
  }
  return at::tensor(flat, at::kDouble).view(shape).clone();
}

bool close(double got, double want) { return std::abs(got - want) <= 1e-9 * std::abs(want) + 1e-12; }

// `only` (optional, [N, T] 0/1) restricts the comparison to its nonzero entries.
void expect_close_tensor(const at::Tensor& got_tensor, const json& want_json, const std::string& what,
                         const at::Tensor& only = at::Tensor()) {
  const at::Tensor want = only.defined() ? to_tensor(want_json) * only.to(at::kDouble) : to_tensor(want_json);
  ASSERT_EQ(got_tensor.sizes(), want.sizes()) << what;
  const at::Tensor got = got_tensor.detach().to(at::kDouble).contiguous().view({-1});
  const at::Tensor flat_want = want.contiguous().view({-1});
  int reported = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double g = got[i].item<double>(), w = flat_want[i].item<double>();
    if (!close(g, w) && reported++ < 5) ADD_FAILURE() << what << "[" << i << "]: got " << fmt::format("{:.17g}", g)
                                                      << ", want " << fmt::format("{:.17g}", w);
  }
}

void expect_close_scalar(double got, double want, const std::string& what) {
  EXPECT_TRUE(close(got, want)) << what << ": got " << fmt::format("{:.17g}", got) << ", want "
                                << fmt::format("{:.17g}", want);
}

std::string yaml_number(const json& value) { return value.is_null() ? "null" : fmt::format("{:.17g}", value.get<double>()); }

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, separator);) parts.push_back(part);
  return parts;
}

// verl's rollout_corr settings: weights min(exp(clamp(q, -20, 20)), threshold) and rejection
// options "token_k1,seq_max_k2" with thresholds "lower_upper" or u (k1: lower = 1/u) per option
// or one for all.
std::string verl_correction_yaml(const json& c) {
  const std::string level = c.at("rollout_is").is_null() ? "none" : c.at("rollout_is").get<std::string>();
  std::string yaml = fmt::format("    level: {}\n    bounds: truncate\n    weight_max: {}\n    log_weight_clamp: 20\n"
                                 "    batch_normalize: {}\n",
                                 level, yaml_number(c.value("rollout_is_threshold", json())),
                                 c.value("rollout_is_batch_normalize", false));
  if (c.value("rollout_rs", json()).is_null()) return yaml;
  const std::vector<std::string> options = split(c.at("rollout_rs").get<std::string>(), ',');
  const json& threshold_json = c.at("rollout_rs_threshold");
  const std::vector<std::string> thresholds =
      threshold_json.is_string() ? split(threshold_json.get<std::string>(), ',') : std::vector<std::string>{yaml_number(threshold_json)};
  yaml += "    rejection:\n";
  for (size_t i = 0; i < options.size(); ++i) {
    const std::string& spec = thresholds.size() == 1 ? thresholds[0] : thresholds.at(i);
    std::string lower = "null", upper = spec;
    if (options[i].size() > 3 && options[i].substr(options[i].size() - 3) == "_k1") {
      const auto underscore = spec.find('_');
      if (underscore == std::string::npos) {
        lower = fmt::format("{:.17g}", 1.0 / std::stod(spec));
      } else {
        lower = spec.substr(0, underscore);
        upper = spec.substr(underscore + 1);
      }
    }
    yaml += fmt::format("      - {{statistic: {}, lower: {}, upper: {}}}\n", options[i], lower, upper);
  }
  return yaml;
}

// TRL's vLLM IS correction: mode token_/sequence_ x truncate/mask with optional clip bounds.
std::string trl_correction_yaml(const json& c) {
  const std::string mode = c.at("vllm_importance_sampling_mode");
  const auto underscore = mode.find('_');
  return fmt::format("    level: {}\n    bounds: {}\n    weight_min: {}\n    weight_max: {}\n", mode.substr(0, underscore),
                     mode.substr(underscore + 1), yaml_number(c.value("vllm_importance_sampling_clip_min", json())),
                     yaml_number(c.value("vllm_importance_sampling_clip_max", json())));
}

// The peer's settings as grpo-cpp configuration. Returns the YAML and, for TRL's dapo/cispo,
// the global token count (num_items_in_batch) that the trainer would pass in.
std::string peer_config_yaml(const json& c, std::optional<double>& global_tokens) {
  const std::string peer = c.at("peer");
  const bool verl = peer == "verl";
  const std::string loss_type = verl ? "" : c.at("loss_type").get<std::string>();

  std::string scaling = verl ? (c.at("std_normalize").get<bool>() ? "group" : "none")
                             : c.at("scale_rewards").get<std::string>();
  std::string policy = fmt::format("    eps_low: {}\n    eps_high: {}\n", yaml_number(c.at("eps_low")),
                                   yaml_number(c.at("eps_high")));
  std::string kl = fmt::format("    beta: {}\n", yaml_number(c.at("beta")));
  std::string aggregation, correction;
  if (verl) {
    kl += fmt::format("    estimator: {}\n", c.at("kl_estimator").get<std::string>());
    const std::string agg_mode = c.at("loss_agg_mode").get<std::string>();
    if (c.value("loss_mode", "vanilla") == "gspo") {
      // verl's GSPO: sequence ratio capped at e^10, no dual clip, policy loss always seq-mean-token-mean.
      policy += "    importance_level: sequence\n    sequence_log_ratio_cap: 10\n    dual_clip_c: null\n";
      aggregation = fmt::format("    mode: seq-mean-token-mean\n    kl_mode: {}\n", agg_mode);
    } else {
      policy += fmt::format("    dual_clip_c: {}\n", yaml_number(c.at("clip_ratio_c")));
      aggregation = fmt::format("    mode: {}\n", agg_mode);
    }
    aggregation += fmt::format("    loss_scale_factor: {}\n", yaml_number(c.value("loss_scale_factor", json())));
    if (c.contains("rollout_is")) correction = verl_correction_yaml(c);
  } else {
    // TRL's loss_type picks both the policy loss and the normalization.
    const std::string kind = (loss_type == "cispo" || loss_type == "sapo") ? loss_type : "clip";
    policy += fmt::format("    kind: {}\n    ratio_cap: {}\n    importance_level: {}\n", kind,
                          yaml_number(c.value("delta", json())), c.value("importance_sampling_level", "token"));
    if (c.value("vllm_importance_sampling_correction", false)) correction = trl_correction_yaml(c);
    if (loss_type == "sapo")
      policy += fmt::format("    sapo_tau_pos: {}\n    sapo_tau_neg: {}\n", yaml_number(c.at("sapo_temperature_pos")),
                            yaml_number(c.at("sapo_temperature_neg")));
    if (loss_type == "grpo" || loss_type == "sapo") {
      aggregation = "    mode: seq-mean-token-mean\n";
    } else if (loss_type == "bnpo") {
      aggregation = "    mode: token-mean\n";
    } else if (loss_type == "dr_grpo") {
      aggregation = fmt::format("    mode: seq-mean-token-sum-norm\n    loss_scale_factor: {}\n"
                                "    norm_per_sequence: true\n",
                                c.at("max_completion_length").get<int64_t>());
    } else if (loss_type == "dapo" || loss_type == "cispo") {
      aggregation = "    mode: token-mean\n";
      global_tokens = c.at("num_items_in_batch").get<double>();
    } else {
      ADD_FAILURE() << "unknown TRL loss_type " << loss_type;
    }
  }
  return fmt::format(
      "model:\n  path: unused\ngrpo:\n  preset: {}\n  group_size: {}\n"
      "  advantage:\n    scaling: {}\n    std_unbiased: {}\n    std_epsilon: {}\n"
      "  policy_loss:\n{}  kl:\n{}  aggregation:\n{}  rollout_correction:\n{}",
      peer, c.at("group_size").get<int64_t>(), scaling, c.at("std_unbiased").get<bool>(),
      yaml_number(c.at("std_epsilon")), policy, kl, aggregation, correction.empty() ? "    level: none\n" : correction);
}

// What the rollout correction produced, for the peers' metrics; `correction` is unset without sampling_logp.
struct CorrectionView {
  std::optional<RolloutCorrection> correction;
  std::optional<LogpMismatch> mismatch;  // old_logp vs sampling_logp on the input mask
  bool sequence_level = false;
};

double verl_masked_mean(double exact, double count) { return exact * count / (count + 1e-8); }

// The two peers' names of metrics and how each is computed from grpo-cpp's exact metrics.
double peer_metric(const std::string& peer, const std::string& name, const GrpoLossMetrics& m,
                   const CorrectionView& view, bool* known) {
  *known = true;
  const double tokens = m.valid_tokens.item<double>();
  const double verl_mean = tokens / (tokens + 1e-8);  // verl's masked_mean divides by count + 1e-8
  const bool rows = m.row_clip_frac.defined();         // TRL counts rows at sequence level
  if (peer == "verl" && name == "pg_clipfrac") return m.clip_frac.item<double>() * verl_mean;
  if (peer == "verl" && name == "pg_clipfrac_lower") return m.dual_clip_frac.item<double>() * verl_mean;
  if (peer == "verl" && name == "ppo_kl") return m.approx_kl_old.item<double>() * verl_mean;
  if (peer == "trl" && name == "clip_ratio/low_mean") return (rows ? m.row_clip_frac_low : m.clip_frac_low).item<double>();
  if (peer == "trl" && name == "clip_ratio/high_mean") return (rows ? m.row_clip_frac_high : m.clip_frac_high).item<double>();
  if (peer == "trl" && name == "clip_ratio/region_mean") return (rows ? m.row_clip_frac : m.clip_frac).item<double>();
  if (view.correction) {
    const RolloutCorrectionMetrics& c = view.correction->metrics;
    const double input_tokens = view.mismatch->tokens.item<double>();
    // verl takes token shares with masked_mean; sequence shares are over all N rows, exact.
    const auto verl_share = [&](const at::Tensor& x) {
      return view.sequence_level ? x.item<double>() : verl_masked_mean(x.item<double>(), input_tokens);
    };
    if (name == "rollout_corr/rollout_is_mean") return verl_masked_mean(c.raw_weight_mean.item<double>(), input_tokens);
    if (name == "rollout_corr/rollout_is_ratio_fraction_high") return verl_share(c.raw_above_frac);
    if (name == "rollout_corr/rollout_is_ratio_fraction_low") return verl_share(c.raw_below_frac);
    if (name == "rollout_corr/rollout_is_batch_norm_factor") return c.batch_norm_factor.item<double>();
    if (name == "rollout_corr/rollout_rs_masked_fraction") return verl_masked_mean(c.rejected_frac.item<double>(), input_tokens);
    if (name == "sampling/importance_sampling_ratio/min") return c.weight_min.item<double>();
    if (name == "sampling/importance_sampling_ratio/mean") return c.weight_mean.item<double>();
    if (name == "sampling/importance_sampling_ratio/max") return c.weight_max.item<double>();
    if (name == "sampling/sampling_logp_difference/mean")
      return view.mismatch->abs_diff_sum.item<double>() / std::max(input_tokens, 1.0);
    if (name == "sampling/sampling_logp_difference/max") return view.mismatch->abs_diff_max.item<double>();
  }
  if (peer == "trl" && name == "cispo_clip_ratio") return (rows ? m.row_clip_frac_high : m.clip_frac_high).item<double>();
  if (peer == "trl" && name == "kl") return m.kl_mean.item<double>();
  *known = false;
  return 0;
}

class GrpoLossFixture : public ::testing::TestWithParam<std::string> {};

TEST(GrpoLossFixtures, DirectoryHoldsCases) {
  EXPECT_FALSE(json_files(fixture_dir()).empty()) << "no *.json cases in " << fixture_dir()
                                                  << " (set GRPO_LOSS_FIXTURES to a fixture directory)";
  EXPECT_FALSE(json_files(offpolicy_fixture_dir()).empty())
      << "no *.json cases in " << offpolicy_fixture_dir() << " (set GRPO_OFFPOLICY_FIXTURES to a fixture directory)";
}

TEST_P(GrpoLossFixture, MatchesPeer) {
  std::ifstream in(GetParam());
  const json fixture = json::parse(in);
  ASSERT_EQ(fixture.at("schema_version").get<int>(), 1);
  const json& inputs = fixture.at("inputs");
  const json& outputs = fixture.at("outputs");
  const json& c = inputs.at("config");
  const std::string peer = c.at("peer");
  SCOPED_TRACE(fixture.at("name").get<std::string>() + ": " + fixture.value("description", ""));

  std::optional<double> global_tokens;
  const std::string yaml = peer_config_yaml(c, global_tokens);
  StatusOr<Config> config = parse_config(yaml, "peer-config");
  ASSERT_TRUE(config.is_ok()) << config.status().message() << "\n" << yaml;
  const GrpoConfig& g = config->grpo;
  ASSERT_EQ(g.group_size, inputs.at("group_size").get<int64_t>());

  const at::Tensor rewards = to_tensor(inputs.at("rewards"));
  const at::Tensor advantages = group_advantages(rewards, g.group_size, g.advantage);
  expect_close_tensor(advantages, outputs.at("advantages"), "advantages");

  GrpoLossInputs loss_inputs;
  loss_inputs.logp = to_tensor(inputs.at("logp")).set_requires_grad(true);
  loss_inputs.old_logp = to_tensor(inputs.at("old_logp"));
  loss_inputs.ref_logp = to_tensor(inputs.at("ref_logp"));
  loss_inputs.mask = to_tensor(inputs.at("response_mask")).to(at::kLong);
  loss_inputs.advantages = advantages;
  loss_inputs.global_token_count = global_tokens;

  CorrectionView view;
  if (inputs.contains("sampling_logp")) {
    ASSERT_TRUE(g.rollout_correction.enabled()) << "a sampling_logp case without a correction in its config";
    const at::Tensor sampling_logp = to_tensor(inputs.at("sampling_logp"));
    view.correction = rollout_correction(loss_inputs.old_logp, sampling_logp, loss_inputs.mask, g.rollout_correction);
    view.mismatch = logp_mismatch(loss_inputs.old_logp, sampling_logp, loss_inputs.mask);
    view.sequence_level = g.rollout_correction.level == CorrectionLevel::kSequence;
    const json want_weights = outputs.value("is_weights", json());
    EXPECT_EQ(want_weights.is_null(), !view.correction->weights.defined()) << "is_weights present or absent";
    if (!want_weights.is_null() && view.correction->weights.defined())
      expect_close_tensor(view.correction->weights, want_weights, "is_weights");
    if (outputs.contains("response_mask_after_rs"))
      EXPECT_TRUE(view.correction->mask.to(at::kDouble).equal(to_tensor(outputs.at("response_mask_after_rs"))))
          << "response_mask_after_rs";
    loss_inputs.mask = view.correction->mask;
    loss_inputs.is_weights = view.correction->weights;
  }
  const GrpoLossResult result = grpo_loss(loss_inputs, GrpoLossOptions{g.policy_loss, g.kl, g.aggregation});

  // The peers report ratio and kl as 0 at the input padding only; grpo-cpp's are 0 wherever a token
  // does not count, rejected ones included, so with rejection they are compared on the kept tokens.
  const at::Tensor kept = view.correction ? view.correction->mask : at::Tensor();
  expect_close_tensor(result.ratio, outputs.at("ratio"), "ratio", kept);
  expect_close_tensor(result.kl, outputs.at("kl"), "kl", kept);
  expect_close_tensor(result.pg_loss_token, outputs.at("pg_loss_token"), "pg_loss_token");
  expect_close_scalar(result.pg_loss.item<double>(), outputs.at("pg_loss"), "pg_loss");
  expect_close_scalar(result.kl_loss.item<double>(), outputs.at("kl_loss"), "kl_loss");
  expect_close_scalar(result.loss.item<double>(), outputs.at("loss"), "loss");
  if (!outputs.at("clip_fraction").is_null()) {
    const bool rows = peer == "trl" && result.metrics.row_clip_frac.defined();  // TRL counts rows at sequence level
    expect_close_scalar((rows ? result.metrics.row_clip_frac : result.metrics.clip_frac).item<double>(),
                        outputs.at("clip_fraction"), "clip_fraction");
  }
  for (const auto& [name, want] : outputs.at("metrics").items()) {
    if (want.is_null()) continue;
    bool known = false;
    const double got = peer_metric(peer, name, result.metrics, view, &known);
    if (!known) {
      ADD_FAILURE() << "metric '" << name << "' of " << peer << " has no grpo-cpp counterpart";
      continue;
    }
    expect_close_scalar(got, want.get<double>(), "metrics." + name);
  }

  result.loss.backward();
  expect_close_tensor(loss_inputs.logp.grad(), outputs.at("grad_logp"), "grad_logp");
}

INSTANTIATE_TEST_SUITE_P(Peers, GrpoLossFixture, ::testing::ValuesIn(fixture_files()), case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GrpoLossFixture);

}  // namespace
}  // namespace grpo
