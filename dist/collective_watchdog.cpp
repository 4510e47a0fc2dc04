#include "dist/collective_watchdog.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include <fmt/format.h>

#include "core/logging.h"
#include "dist/communicator.h"

namespace grpo {
namespace {

using Clock = std::chrono::steady_clock;

struct OpenWatch {
  const char* collective;
  int rank, size;
  int64_t sequence;     // this process's count of watched collectives, so a log can tell them apart
  std::string context;  // set_collective_context at the time of the call
  Clock::time_point started;
  CollectiveExpiry expire;
  std::vector<int> world_ranks;  // empty: rank numbers are the job's
};

// The process's watchdog: its thread starts with the first watch after a timeout is set and
// lives until exit (detached: it only ever sleeps or ends the job).
class Watchdog {
 public:
  static Watchdog& instance() {
    static Watchdog* watchdog = new Watchdog();  // never destroyed: the thread may outlive statics
    return *watchdog;
  }

  void set_timeout(double seconds) {
    std::lock_guard<std::mutex> lock(mutex_);
    timeout_s_ = seconds;
  }
  void set_context(std::string context) {
    std::lock_guard<std::mutex> lock(mutex_);
    context_ = std::move(context);
  }

  int64_t open(const char* collective, int rank, int size, CollectiveExpiry expire, std::vector<int> world_ranks) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (timeout_s_ <= 0) return -1;
    if (!thread_started_) {
      std::thread([this] { watch(); }).detach();
      thread_started_ = true;
    }
    const int64_t id = next_id_++;
    open_[id] = OpenWatch{collective, rank, size, id + 1, context_, Clock::now(), std::move(expire), std::move(world_ranks)};
    return id;
  }
  void close(int64_t id) {
    std::lock_guard<std::mutex> lock(mutex_);
    open_.erase(id);
  }

 private:
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    auto last_wake = Clock::now();
    for (;;) {
      // Checks ten times per timeout (at most once a second): an expiry is noticed within 10%.
      const double period = std::min(1.0, timeout_s_ > 0 ? timeout_s_ / 10 : 1.0);
      wake_.wait_for(lock, std::chrono::duration<double>(period));
      const auto now = Clock::now();
      const auto slept = now - last_wake;
      last_wake = now;
      // A wake far later than asked means this process itself was stopped (SIGSTOP, a debugger,
      // a suspended VM): its own watches did not wait that long for a peer, so the pause does not
      // count. Otherwise a stopped rank, continued by the launcher only to be killed, would report
      // itself as the one left waiting.
      const auto late = slept - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(period + 2.0));
      if (late > Clock::duration::zero())
        for (auto& entry : open_) entry.second.started += late;
      if (timeout_s_ <= 0) continue;
      for (auto& [id, w] : open_) {
        const double waited = std::chrono::duration<double>(now - w.started).count();
        if (waited <= timeout_s_) continue;
        auto job_rank = [&w](int r) { return w.world_ranks.empty() ? r : w.world_ranks[static_cast<size_t>(r)]; };
        std::string others;
        for (int r = 0; r < w.size; ++r)
          if (r != w.rank) others += fmt::format("{}{}", others.empty() ? "" : ", ", job_rank(r));
        const std::string who = w.world_ranks.empty()
                                    ? fmt::format("rank {} of {}", w.rank, w.size)
                                    : fmt::format("rank {} (rank {} of {} in a sub-communicator)", job_rank(w.rank),
                                                  w.rank, w.size);
        const std::string message = fmt::format(
            "collective watchdog: {} waited {:.1f} s in {} (collective #{}{}{}), longer than "
            "trainer.collective_timeout_s = {} s. Not every rank arrived: the missing ones are among ranks {} (MPI "
            "does not say which; a rank that is stopped, hung, or still computing never reports). Aborting the job.",
            who, waited, w.collective, w.sequence, w.context.empty() ? "" : ", ", w.context, timeout_s_,
            others.empty() ? "none" : others);
        CollectiveExpiry expire = w.expire;
        lock.unlock();
        log_error("{}", message);
        std::fflush(nullptr);
        expire(message);
        std::_Exit(1);  // not reached unless `expire` returned
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  double timeout_s_ = 0;
  std::string context_;
  bool thread_started_ = false;
  int64_t next_id_ = 0;
  std::map<int64_t, OpenWatch> open_;
};

}  // namespace

CollectiveWatch::CollectiveWatch(const char* collective, int rank, int size, CollectiveExpiry expire,
                                 std::vector<int> world_ranks)
    : id_(size > 1 ? Watchdog::instance().open(collective, rank, size, std::move(expire), std::move(world_ranks)) : -1) {}

CollectiveWatch::~CollectiveWatch() {
  if (id_ >= 0) Watchdog::instance().close(id_);
}

void set_collective_timeout(double seconds) { Watchdog::instance().set_timeout(seconds); }

void set_collective_context(std::string context) { Watchdog::instance().set_context(std::move(context)); }

}  // namespace grpo
