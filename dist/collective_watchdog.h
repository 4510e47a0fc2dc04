#pragma once
// A deadline on blocking collectives (trainer.collective_timeout_s). A Communicator opens a
// CollectiveWatch around each blocking call; one thread per process checks the open watches, and
// when one is older than the timeout it logs the collective, this rank's step and the ranks that
// may not have arrived, then calls the watch's `expire` (which ends the whole job). The waiting
// thread itself stays inside MPI or NCCL, so nothing in the hot path changes but two clock reads.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace grpo {

// What the watchdog does when a watch expires: end every rank of the job. Never returns.
using CollectiveExpiry = std::function<void(const std::string& message)>;

class CollectiveWatch {
 public:
  // `collective` names the call ("all_reduce_sum"); `rank`/`size` describe the communicator.
  // `world_ranks` (a sub-communicator's members' ranks in the job, by their rank here; empty: the
  // communicator is the job's) makes the message name ranks as the launcher numbers them.
  CollectiveWatch(const char* collective, int rank, int size, CollectiveExpiry expire, std::vector<int> world_ranks = {});
  ~CollectiveWatch();
  CollectiveWatch(const CollectiveWatch&) = delete;
  CollectiveWatch& operator=(const CollectiveWatch&) = delete;

 private:
  int64_t id_ = -1;  // -1: no timeout set, nothing registered
};

}  // namespace grpo
