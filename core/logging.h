#pragma once
// Rank-aware logging. Only rank 0 prints below WARN unless `all_ranks` is set; every rank
// prints warnings and errors, prefixed with its rank, so a failing worker is never silent.

#include <string_view>
#include <utility>

#include <fmt/format.h>

namespace grpo {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

struct LogSettings {
  LogLevel level = LogLevel::kInfo;  // Messages below this level are dropped.
  bool all_ranks = false;            // Let every rank print DEBUG/INFO, not only rank 0.
};

// The rank of this process as the launcher reports it (OpenMPI, MPICH/PMI, SLURM, torchrun);
// 0 when the process was started without a launcher.
int launcher_rank();

// Sets the rank and settings every later message uses. Safe to call again (e.g. after MPI init).
void configure_logging(int rank, LogSettings settings);

bool log_enabled(LogLevel level);
void log_message(LogLevel level, std::string_view message);

template <class... Args>
void log_debug(fmt::format_string<Args...> format, Args&&... args) {
  if (log_enabled(LogLevel::kDebug)) log_message(LogLevel::kDebug, fmt::format(format, std::forward<Args>(args)...));
}
template <class... Args>
void log_info(fmt::format_string<Args...> format, Args&&... args) {
  if (log_enabled(LogLevel::kInfo)) log_message(LogLevel::kInfo, fmt::format(format, std::forward<Args>(args)...));
}
template <class... Args>
void log_warn(fmt::format_string<Args...> format, Args&&... args) {
  if (log_enabled(LogLevel::kWarn)) log_message(LogLevel::kWarn, fmt::format(format, std::forward<Args>(args)...));
}
template <class... Args>
void log_error(fmt::format_string<Args...> format, Args&&... args) {
  log_message(LogLevel::kError, fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace grpo
