#include "core/logging.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace grpo {
namespace {

struct LoggerState {
  std::mutex mutex;
  int rank = launcher_rank();
  LogSettings settings;
};

LoggerState& state() {
  static LoggerState instance;
  return instance;
}

const char* level_name(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarn: return "WARN";
    case LogLevel::kError: return "ERROR";
  }
  return "?";
}

}  // namespace

int launcher_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "RANK"}) {
    if (const char* value = std::getenv(name)) {
      char* end = nullptr;
      const long rank = std::strtol(value, &end, 10);
      if (end != value && *end == '\0' && rank >= 0) return static_cast<int>(rank);
    }
  }
  return 0;
}

void configure_logging(int rank, LogSettings settings) {
  std::lock_guard<std::mutex> lock(state().mutex);
  state().rank = rank;
  state().settings = settings;
}

bool log_enabled(LogLevel level) {
  const LoggerState& s = state();
  if (level < s.settings.level) return false;
  return level >= LogLevel::kWarn || s.rank == 0 || s.settings.all_ranks;
}

void log_message(LogLevel level, std::string_view message) {
  LoggerState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char clock[16];
  std::strftime(clock, sizeof clock, "%H:%M:%S", &local);
  fmt::print(stderr, "[grpo {} rank {} {}] {}\n", clock, s.rank, level_name(level), message);
  std::fflush(stderr);
}

}  // namespace grpo
