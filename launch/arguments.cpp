#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include <fmt/format.h>

#include "launch/commands.h"

namespace grpo {

bool Arguments::has_flag(const std::string& name) const {
  return std::find(flags.begin(), flags.end(), name) != flags.end();
}

std::optional<std::string> Arguments::value(const std::string& name) const {
  const auto it = values.find(name);
  if (it == values.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::string Arguments::required(const std::string& name) const {
  if (auto v = value(name)) return *v;
  throw UsageError(fmt::format("{} is required", name));
}

double Arguments::number(const std::string& name, double fallback) const {
  const auto v = value(name);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const double x = std::strtod(v->c_str(), &end);
  if (v->empty() || *end != '\0' || errno != 0) throw UsageError(fmt::format("{}: expected a number, got '{}'", name, *v));
  return x;
}

int64_t Arguments::integer(const std::string& name, int64_t fallback) const {
  const auto v = value(name);
  if (!v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno != 0) throw UsageError(fmt::format("{}: expected an integer, got '{}'", name, *v));
  return x;
}

}  // namespace grpo
