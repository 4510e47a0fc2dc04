// Every case in GRPO_LOSS_FIXTURES (default ../shared/fixtures/grpo): verl and TRL outputs,
// float64, produced by the peers' own code. Each peer's settings are expressed as a grpo-cpp
// YAML config and parsed by the real config parser, so the test also proves that both peers'
// behaviour is a configuration. Tolerance (fixture README): |got - want| <= 1e-9 |want| + 1e-12.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
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

std::vector<std::string> fixture_files() {
  return testing::sorted_entries(fixture_dir(), [](const fs::directory_entry& e) { return e.path().extension() == ".json"; });
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

void expect_close_tensor(const at::Tensor& got_tensor, const json& want_json, const std::string& what) {
  const at::Tensor want = to_tensor(want_json);
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
  std::string aggregation;
  if (verl) {
    policy += fmt::format("    dual_clip_c: {}\n", yaml_number(c.at("clip_ratio_c")));
    kl += fmt::format("    estimator: {}\n", c.at("kl_estimator").get<std::string>());
    aggregation = fmt::format("    mode: {}\n    loss_scale_factor: {}\n", c.at("loss_agg_mode").get<std::string>(),
                              yaml_number(c.value("loss_scale_factor", json())));
  } else {
    // TRL's loss_type picks both the policy loss and the normalization.
    const std::string kind = (loss_type == "cispo" || loss_type == "sapo") ? loss_type : "clip";
    policy += fmt::format("    kind: {}\n    ratio_cap: {}\n", kind, yaml_number(c.value("delta", json())));
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
      "  policy_loss:\n{}  kl:\n{}  aggregation:\n{}",
      peer, c.at("group_size").get<int64_t>(), scaling, c.at("std_unbiased").get<bool>(),
      yaml_number(c.at("std_epsilon")), policy, kl, aggregation);
}

// The two peers' names of metrics and how each is computed from grpo-cpp's exact metrics.
double peer_metric(const std::string& peer, const std::string& name, const GrpoLossMetrics& m, bool* known) {
  *known = true;
  const double tokens = m.valid_tokens.item<double>();
  const double verl_mean = tokens / (tokens + 1e-8);  // verl's masked_mean divides by count + 1e-8
  if (peer == "verl" && name == "pg_clipfrac") return m.clip_frac.item<double>() * verl_mean;
  if (peer == "verl" && name == "pg_clipfrac_lower") return m.dual_clip_frac.item<double>() * verl_mean;
  if (peer == "verl" && name == "ppo_kl") return m.approx_kl_old.item<double>() * verl_mean;
  if (peer == "trl" && name == "clip_ratio/low_mean") return m.clip_frac_low.item<double>();
  if (peer == "trl" && name == "clip_ratio/high_mean") return m.clip_frac_high.item<double>();
  if (peer == "trl" && name == "clip_ratio/region_mean") return m.clip_frac.item<double>();
  if (peer == "trl" && name == "cispo_clip_ratio") return m.clip_frac_high.item<double>();
  if (peer == "trl" && name == "kl") return m.kl_mean.item<double>();
  *known = false;
  return 0;
}

class GrpoLossFixture : public ::testing::TestWithParam<std::string> {};

TEST(GrpoLossFixtures, DirectoryHoldsCases) {
  EXPECT_FALSE(fixture_files().empty()) << "no *.json cases in " << fixture_dir()
                                        << " (set GRPO_LOSS_FIXTURES to a fixture directory)";
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
  const GrpoLossResult result = grpo_loss(loss_inputs, GrpoLossOptions{g.policy_loss, g.kl, g.aggregation});

  expect_close_tensor(result.ratio, outputs.at("ratio"), "ratio");
  expect_close_tensor(result.kl, outputs.at("kl"), "kl");
  expect_close_tensor(result.pg_loss_token, outputs.at("pg_loss_token"), "pg_loss_token");
  expect_close_scalar(result.pg_loss.item<double>(), outputs.at("pg_loss"), "pg_loss");
  expect_close_scalar(result.kl_loss.item<double>(), outputs.at("kl_loss"), "kl_loss");
  expect_close_scalar(result.loss.item<double>(), outputs.at("loss"), "loss");
  if (!outputs.at("clip_fraction").is_null())
    expect_close_scalar(result.metrics.clip_frac.item<double>(), outputs.at("clip_fraction"), "clip_fraction");
  for (const auto& [name, want] : outputs.at("metrics").items()) {
    if (want.is_null()) continue;
    bool known = false;
    const double got = peer_metric(peer, name, result.metrics, &known);
    if (!known) {
      ADD_FAILURE() << "metric '" << name << "' of " << peer << " has no grpo-cpp counterpart";
      continue;
    }
    expect_close_scalar(got, want.get<double>(), "metrics." + name);
  }

  result.loss.backward();
  expect_close_tensor(loss_inputs.logp.grad(), outputs.at("grad_logp"), "grad_logp");
}

INSTANTIATE_TEST_SUITE_P(Peers, GrpoLossFixture, ::testing::ValuesIn(fixture_files()), testing::fixture_case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(GrpoLossFixture);

}  // namespace
}  // namespace grpo
