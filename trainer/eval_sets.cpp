#include "trainer/eval_sets.h"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

namespace grpo {
namespace {

bool is_name_start(char ch) { return std::isalpha(static_cast<unsigned char>(ch)) || ch == '_'; }
bool is_name_char(char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; }

std::string field_as_prompt_text(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    std::string lines;
    for (const nlohmann::json& item : value) lines += (lines.empty() ? "" : "\n") + field_as_prompt_text(item);
    return lines;
  }
  return value.dump();
}

// The set's records after skip, limit and eval.max_problems.
void keep_window(std::vector<Example>& examples, int64_t skip, int64_t limit, int64_t max_problems) {
  const size_t begin = std::min(examples.size(), static_cast<size_t>(skip));
  examples.erase(examples.begin(), examples.begin() + static_cast<std::ptrdiff_t>(begin));
  if (limit > 0 && examples.size() > static_cast<size_t>(limit)) examples.resize(static_cast<size_t>(limit));
  if (max_problems > 0 && examples.size() > static_cast<size_t>(max_problems))
    examples.resize(static_cast<size_t>(max_problems));
}

StatusOr<EvalSet> load_eval_set(const Config& config, const EvalDatasetConfig& set_config, const std::string& key) {
  EvalSet set;
  set.config = set_config;
  set.key = key;
  const std::string path_key = key.rfind("data.", 0) == 0 ? key : key + ".path";
  DataConfig mapping = config.data;
  if (!set_config.prompt_field.empty()) mapping.prompt_field = set_config.prompt_field;
  if (!set_config.answer_field.empty()) mapping.answer_field = set_config.answer_field;
  StatusOr<Dataset> data = load_dataset(set_config.path, mapping);
  if (!data) return Status::error(path_key + ": " + data.status().message());
  set.problems = std::move(data->examples);
  // HumanEval, MBPP and MATH-500 name their problems in their own field; the rows say which.
  for (Example& e : set.problems)
    for (const char* id_field : {"task_id", "unique_id"})
      if (!e.fields.contains("id") && e.fields.contains(id_field)) {
        e.id = e.fields[id_field].is_string() ? e.fields[id_field].get<std::string>() : e.fields[id_field].dump();
        break;
      }
  keep_window(set.problems, set_config.skip, set_config.limit, config.eval.max_problems);
  if (set.problems.empty())
    return Status::error(fmt::format("{}: {} has no problems (after skip {}, limit {})", path_key, set_config.path,
                                     set_config.skip, set_config.limit));

  const bool own_rewards = !set_config.rewards.empty();
  set.functions = own_rewards ? set_config.rewards : config.reward.functions;
  if (set.functions.empty()) set.functions.push_back(RewardFunctionConfig{"math", "", 1.0, nlohmann::json::object()});
  const std::string rewards_key = own_rewards ? key + ".rewards" : "reward.functions";
  StatusOr<RewardSet> rewards = RewardSet::create(set.functions);
  if (!rewards)
    return Status::error(fmt::format("{} ({}): {}", rewards_key, set_config.name, rewards.status().message()));
  set.rewards = std::move(rewards).value();
  StatusOr<EvalJudge> judge = make_eval_judge(set.functions, set_config, key);
  if (!judge) return judge.status();
  set.judge = std::move(judge).value();

  for (Example& e : set.problems) {
    if (set_config.prompt_template.empty()) break;
    StatusOr<std::string> prompt = render_prompt_template(set_config.prompt_template, e.fields);
    if (!prompt)
      return Status::error(fmt::format("{}: {}.prompt_template: {}", e.source.empty() ? e.id : e.source, key,
                                       prompt.status().message()));
    e.prompt = std::move(prompt).value();
  }
  ExampleChecks checks;
  const RewardSet& scorer = set.rewards;
  checks.missing_field = [&scorer](const nlohmann::json& fields) { return scorer.missing_field(fields); };
  Dataset window;
  window.examples = std::move(set.problems);
  StatusOr<int64_t> missing = check_examples(window, checks, mapping);
  if (!missing) return Status::error(fmt::format("{} ({}): {}", key, set_config.name, missing.status().message()));
  set.problems = std::move(window.examples);
  return set;
}

}  // namespace

StatusOr<std::string> render_prompt_template(const std::string& prompt_template, const nlohmann::json& fields) {
  std::string out;
  for (size_t i = 0; i < prompt_template.size();) {
    const char ch = prompt_template[i];
    if ((ch == '{' || ch == '}') && i + 1 < prompt_template.size() && prompt_template[i + 1] == ch) {
      out += ch;
      i += 2;
      continue;
    }
    if (ch == '{' && i + 1 < prompt_template.size() && is_name_start(prompt_template[i + 1])) {
      size_t end = i + 1;
      while (end < prompt_template.size() && is_name_char(prompt_template[end])) ++end;
      if (end < prompt_template.size() && prompt_template[end] == '}') {
        const std::string name = prompt_template.substr(i + 1, end - i - 1);
        const auto value = fields.find(name);
        if (value == fields.end() || value->is_null())
          return Status::error(fmt::format("the record has no field '{}' for {{{}}}", name, name));
        out += field_as_prompt_text(*value);
        i = end + 1;
        continue;
      }
    }
    out += ch;
    ++i;
  }
  return out;
}

StatusOr<std::vector<EvalSet>> load_eval_sets(const Config& config) {
  std::vector<EvalSet> sets;
  if (config.eval.datasets.empty()) {
    if (config.data.eval_path.empty())
      return Status::error("nothing to evaluate: set data.eval_path or eval.datasets");
    EvalDatasetConfig only;
    only.name = "eval";
    only.path = config.data.eval_path;
    StatusOr<EvalSet> set = load_eval_set(config, only, "data.eval_path");
    if (!set) return set.status();
    sets.push_back(std::move(set).value());
    return sets;
  }
  for (size_t i = 0; i < config.eval.datasets.size(); ++i) {
    StatusOr<EvalSet> set = load_eval_set(config, config.eval.datasets[i], fmt::format("eval.datasets[{}]", i));
    if (!set) return set.status();
    sets.push_back(std::move(set).value());
  }
  return sets;
}

StatusOr<EvalSet> load_dev_set(const Config& config) {
  const bool own = !config.data.dev_path.empty();
  if (!own && config.data.eval_path.empty())
    return Status::error("eval.every_steps: nothing to evaluate during training; set data.dev_path (or data.eval_path)");
  EvalDatasetConfig dev;
  dev.name = "dev";
  dev.path = own ? config.data.dev_path : config.data.eval_path;
  return load_eval_set(config, dev, own ? "data.dev_path" : "data.eval_path");
}

}  // namespace grpo
