#include "trainer/eval_scoring.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>

#include "rewards/code_reward.h"
#include "rewards/math_grader.h"
#include "trainer/trainers.h"

namespace grpo {
namespace {

std::string trim(const std::string& text) {
  const size_t begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  return text.substr(begin, text.find_last_not_of(" \t\r\n") - begin + 1);
}

std::string program_without_layout_noise(const std::string& code) {
  std::istringstream lines(code);
  std::string out;
  for (std::string line; std::getline(lines, line);) {
    line.erase(line.find_last_not_of(" \t\r") + 1);
    if (line.empty()) continue;
    out += line + "\n";
  }
  return out;
}

bool has_function(const std::vector<RewardFunctionConfig>& functions, const std::vector<std::string>& labels,
                  const std::string& name) {
  for (const RewardFunctionConfig& f : functions)
    if (f.name == name && std::find(labels.begin(), labels.end(), f.label.empty() ? f.name : f.label) != labels.end())
      return true;
  return false;
}

}  // namespace

StatusOr<EvalJudge> make_eval_judge(const std::vector<RewardFunctionConfig>& functions, const EvalDatasetConfig& set,
                                    const std::string& where) {
  EvalJudge judge;
  judge.threshold = set.correct_threshold;
  std::vector<std::string> labels;
  for (const RewardFunctionConfig& f : functions) labels.push_back(f.label.empty() ? f.name : f.label);
  if (!set.correct_rewards.empty()) {
    for (const std::string& label : set.correct_rewards)
      if (std::find(labels.begin(), labels.end(), label) == labels.end())
        return Status::error(fmt::format("{}.correct_rewards: '{}' is not a reward of this set (its labels: {})", where,
                                         label, fmt::join(labels, ", ")));
    judge.deciding = set.correct_rewards;
  } else {
    for (size_t i = 0; i < functions.size(); ++i)
      if (functions[i].name == "math" || functions[i].name == "code") judge.deciding.push_back(labels[i]);
  }
  judge.vote = set.vote;
  if (judge.vote == EvalVote::kAuto)
    judge.vote = has_function(functions, judge.deciding, "math")   ? EvalVote::kMath
                 : has_function(functions, judge.deciding, "code") ? EvalVote::kCode
                                                                   : EvalVote::kText;
  std::vector<std::string> parts;
  for (const std::string& label : judge.deciding)
    parts.push_back(fmt::format("{} (its `correct` component, else score >= {})", label, judge.threshold));
  judge.rule = judge.deciding.empty() ? fmt::format("weighted total >= {}", judge.threshold)
                                      : fmt::format("{}", fmt::join(parts, " and "));
  return judge;
}

bool sample_correct(const SampleScores& scores, const EvalJudge& judge) {
  if (judge.deciding.empty()) return scores.errors.empty() && scores.total >= judge.threshold;
  for (const std::string& label : judge.deciding) {
    // A reward that failed (reward.on_error: score) has a stand-in score and no reason.
    if (!scores.reasons.count(label)) return false;
    const auto correct = scores.components.find(label + ".correct");
    const double value = correct != scores.components.end() ? correct->second : scores.rewards.at(label);
    if (value < (correct != scores.components.end() ? 1.0 : judge.threshold)) return false;
  }
  return true;
}

std::optional<std::string> vote_answer(const std::string& completion, EvalVote vote) {
  std::string answer;
  switch (vote) {
    case EvalVote::kMath: {
      const auto extracted = extract_final_answer(completion);
      if (!extracted) return std::nullopt;
      answer = *extracted;
      break;
    }
    case EvalVote::kCode:
      answer = program_without_layout_noise(extract_code(completion));
      break;
    case EvalVote::kText:
    case EvalVote::kAuto: {
      const size_t think_end = completion.find("</think>");
      answer = trim(think_end == std::string::npos ? completion : completion.substr(think_end + 8));
      break;
    }
  }
  if (answer.find_first_not_of(" \t\r\n") == std::string::npos) return std::nullopt;
  return answer;
}

bool same_answer(const std::string& a, const std::string& b, EvalVote vote) {
  return vote == EvalVote::kMath ? math_equivalent(a, b).equivalent : a == b;
}

ProblemTally tally_problem(const std::vector<std::string>& completions, const std::vector<SampleScores>& scores,
                           const EvalJudge& judge) {
  if (completions.size() != scores.size())
    throw std::invalid_argument(
        fmt::format("tally_problem: {} completions but {} scores", completions.size(), scores.size()));
  struct Group {
    std::string answer;
    int64_t votes = 0;
    size_t first_sample = 0;
  };
  std::vector<Group> groups;  // in order of first appearance
  ProblemTally tally;
  for (size_t j = 0; j < completions.size(); ++j) {
    if (sample_correct(scores[j], judge)) ++tally.correct;
    const std::optional<std::string> answer = vote_answer(completions[j], judge.vote);
    if (!answer) continue;
    auto group = std::find_if(groups.begin(), groups.end(),
                              [&](const Group& g) { return same_answer(*answer, g.answer, judge.vote); });
    if (group == groups.end()) groups.push_back({*answer, 1, j});
    else ++group->votes;
  }
  const Group* majority = nullptr;
  for (const Group& g : groups)
    if (!majority || g.votes > majority->votes) majority = &g;
  if (majority) {
    tally.majority = majority->answer;
    tally.majority_votes = majority->votes;
    tally.consensus = sample_correct(scores[majority->first_sample], judge);
  }
  return tally;
}

std::vector<int64_t> pass_ladder(int64_t n) {
  std::vector<int64_t> ks;
  for (int64_t k = 1; k < n; k *= 2) ks.push_back(k);
  ks.push_back(n);
  return ks;
}

std::vector<double> EvalSetTally::flatten() const {
  std::vector<double> values{static_cast<double>(problems), correct,          consensus,
                             format_ok,                     response_tokens, reward_errors};
  values.insert(values.end(), pass_at.begin(), pass_at.end());
  for (const auto& [label, sum] : reward_sums) values.push_back(sum);
  return values;
}

void EvalSetTally::unflatten(const std::vector<double>& values) {
  if (values.size() != 6 + pass_at.size() + reward_sums.size())
    throw std::invalid_argument("EvalSetTally::unflatten: the payload does not match this tally's shape");
  problems = static_cast<int64_t>(values[0]);
  correct = values[1];
  consensus = values[2];
  format_ok = values[3];
  response_tokens = values[4];
  reward_errors = values[5];
  size_t i = 6;
  for (double& p : pass_at) p = values[i++];
  for (auto& [label, sum] : reward_sums) sum = values[i++];
}

EvalSetTally score_eval_samples(const std::vector<const Example*>& problems, const std::vector<std::string>& completions,
                                const std::vector<int64_t>& completion_tokens, int64_t k, const RewardSet& rewards,
                                const RewardConfig& reward_config, const EvalJudge& judge, ThreadPool& pool) {
  const size_t rows = problems.size() * static_cast<size_t>(k);
  if (completions.size() != rows || completion_tokens.size() != rows)
    throw std::invalid_argument(fmt::format("score_eval_samples: {} problems x {} samples need {} completions, got {}",
                                            problems.size(), k, rows, completions.size()));
  std::vector<RewardSample> samples(rows);
  for (size_t row = 0; row < rows; ++row) {
    const Example& e = *problems[row / static_cast<size_t>(k)];
    samples[row].id = fmt::format("{}#{}", e.id, row % static_cast<size_t>(k));
    samples[row].prompt = e.prompt;
    samples[row].completion = completions[row];
    samples[row].fields = e.fields;
    samples[row].completion_tokens = completion_tokens[row];
  }
  ScoringStats stats;
  const std::vector<SampleScores> scores = rewards.score(samples, reward_config, pool, &stats);
  static const std::shared_ptr<const Reward> format = [] {
    StatusOr<std::unique_ptr<Reward>> made = make_reward("format", {{"mode", "strict"}});
    if (!made) throw std::logic_error(made.status().message());
    return std::shared_ptr<const Reward>(std::move(made).value());
  }();

  EvalSetTally tally;
  tally.problems = static_cast<int64_t>(problems.size());
  tally.samples = k;
  tally.pass_at.assign(pass_ladder(k).size(), 0.0);
  tally.reward_errors = static_cast<double>(stats.errors);
  for (const std::string& label : rewards.labels()) tally.reward_sums[label] = 0.0;
  const std::vector<int64_t> ladder = pass_ladder(k);
  for (size_t p = 0; p < problems.size(); ++p) {
    const size_t first = p * static_cast<size_t>(k), last = first + static_cast<size_t>(k);
    const std::vector<std::string> texts(completions.begin() + first, completions.begin() + last);
    const std::vector<SampleScores> problem_scores(scores.begin() + first, scores.begin() + last);
    const ProblemTally t = tally_problem(texts, problem_scores, judge);
    tally.correct += static_cast<double>(t.correct);
    tally.consensus += t.consensus ? 1.0 : 0.0;
    for (size_t i = 0; i < ladder.size(); ++i) tally.pass_at[i] += pass_at_k(k, t.correct, ladder[i]);
    for (size_t row = first; row < last; ++row) {
      tally.format_ok += format->score(samples[row]).score;
      tally.response_tokens += static_cast<double>(std::max<int64_t>(completion_tokens[row], 0));
      for (const auto& [label, value] : scores[row].rewards) tally.reward_sums[label] += value;
    }
    const Example& e = *problems[p];
    tally.problem_rows.push_back({{"id", e.id},
                                  {"correct", t.correct},
                                  {"majority", t.majority},
                                  {"votes", t.majority_votes},
                                  {"gold", e.answer.empty() ? "" : gold_answer(e.answer)}});
  }
  return tally;
}

}  // namespace grpo
