#include "rewards/reward.h"

#include <mutex>

#include <fmt/format.h>

#include "core/string_distance.h"
#include "rewards/builtin_rewards.h"

namespace grpo {
namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, RewardFactory> factories;
};

Registry& registry() {
  static Registry* instance = [] {
    auto* r = new Registry();
    register_builtin_rewards([r](const std::string& name, RewardFactory f) { r->factories[name] = std::move(f); });
    return r;
  }();
  return *instance;
}

}  // namespace

void register_reward(const std::string& name, RewardFactory factory) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.factories[name] = std::move(factory);
}

std::vector<std::string> registered_rewards() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, factory] : r.factories) names.push_back(name);
  return names;
}

StatusOr<std::unique_ptr<Reward>> make_reward(const std::string& name, const nlohmann::json& options) {
  RewardFactory factory;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    const auto it = r.factories.find(name);
    if (it == r.factories.end()) {
      std::vector<std::string> names;
      for (const auto& entry : r.factories) names.push_back(entry.first);
      const std::string near = closest_name(name, names);
      return Status::error(fmt::format("unknown reward '{}'{} (registered: {})", name,
                                       near.empty() ? "" : fmt::format("; did you mean '{}'?", near),
                                       fmt::join(names, ", ")));
    }
    factory = it->second;
  }
  if (!options.is_null() && !options.is_object())
    return Status::error(fmt::format("reward '{}': options must be a mapping", name));
  return factory(options.is_null() ? nlohmann::json::object() : options);
}

void RewardOptions::fail(const std::string& message) {
  if (error_.empty()) error_ = fmt::format("reward '{}': {}", reward_, message);
}

template <typename T>
T RewardOptions::typed(const std::string& key, T fallback, bool (nlohmann::json::*is_type)() const noexcept,
                       const char* expected) {
  known_.push_back(key);
  if (!options_.contains(key)) return fallback;
  if (!(options_[key].*is_type)()) {
    fail(fmt::format("option '{}' must be {}, got {}", key, expected, options_[key].dump()));
    return fallback;
  }
  return options_[key].get<T>();
}

std::string RewardOptions::string(const std::string& key, const std::string& fallback) {
  return typed<std::string>(key, fallback, &nlohmann::json::is_string, "a string");
}

double RewardOptions::number(const std::string& key, double fallback) {
  return typed<double>(key, fallback, &nlohmann::json::is_number, "a number");
}

int64_t RewardOptions::integer(const std::string& key, int64_t fallback) {
  return typed<int64_t>(key, fallback, &nlohmann::json::is_number_integer, "an integer");
}

bool RewardOptions::boolean(const std::string& key, bool fallback) {
  return typed<bool>(key, fallback, &nlohmann::json::is_boolean, "true or false");
}

nlohmann::json RewardOptions::object(const std::string& key) {
  known_.push_back(key);
  if (!options_.contains(key)) return nlohmann::json::object();
  if (!options_[key].is_object()) {
    fail(fmt::format("option '{}' must be a mapping, got {}", key, options_[key].dump()));
    return nlohmann::json::object();
  }
  return options_[key];
}

std::vector<std::string> RewardOptions::strings(const std::string& key) {
  known_.push_back(key);
  std::vector<std::string> out;
  if (!options_.contains(key)) return out;
  const auto& value = options_[key];
  bool ok = value.is_array();
  for (const auto& item : value) ok = ok && item.is_string();
  if (!ok) {
    fail(fmt::format("option '{}' must be a list of strings, got {}", key, value.dump()));
    return out;
  }
  for (const auto& item : value) out.push_back(item.get<std::string>());
  return out;
}

Status RewardOptions::finish() {
  for (const auto& [key, value] : options_.items()) {
    if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
    const std::string near = closest_name(key, known_);
    fail(fmt::format("unknown option '{}'{} (options: {})", key,
                     near.empty() ? "" : fmt::format("; did you mean '{}'?", near), fmt::join(known_, ", ")));
  }
  return error_.empty() ? Status::ok() : Status::error(error_);
}

}  // namespace grpo
