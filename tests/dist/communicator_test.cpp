// The MPI communicator's bf16 path and sub-communicators, run by ctest under mpirun on 3 ranks
// (every rank runs every case; collectives meet): bf16 moves as 16 bits without changing a bit,
// is summed as numbers (not as 16-bit integers) in fp32, split(color) groups ranks, gather_into
// delivers every rank's part to the root alone, and strings of any length gather in rank order.

#include "dist/communicator.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace grpo {
namespace {

TEST(MpiCommunicator, Bfloat16GathersAndBroadcastsKeepEveryBit) {
  Communicator& comm = world();
  ASSERT_GE(comm.size(), 2) << "run under mpirun with 2 or more ranks";
  at::manual_seed(comm.rank());
  const at::Tensor local = at::randn({1001}).to(at::kBFloat16);
  const at::Tensor gathered = comm.all_gather(local);
  ASSERT_EQ(gathered.scalar_type(), at::kBFloat16);
  for (int r = 0; r < comm.size(); ++r) {
    at::manual_seed(r);
    EXPECT_TRUE(at::equal(gathered[r], at::randn({1001}).to(at::kBFloat16))) << "rank " << r << "'s slice";
  }
  at::Tensor shared = comm.rank() == 1 ? local.clone() : at::zeros({1001}, at::kBFloat16);
  comm.broadcast(shared, 1);
  at::manual_seed(1);
  EXPECT_TRUE(at::equal(shared, at::randn({1001}).to(at::kBFloat16)));
}

TEST(MpiCommunicator, Bfloat16SumsAreSumsOfNumbers) {
  Communicator& comm = world();
  // Rank r holds (r + 1) * 1.5 * (i mod 7 - 3): every partial sum is a small multiple of 0.5,
  // exact in bf16, so the result is exact; adding the bits as integers would be far off.
  const at::Tensor pattern = (at::arange(999, at::kFloat).remainder(7) - 3) * 1.5;
  at::Tensor values = (pattern * (comm.rank() + 1)).to(at::kBFloat16);
  comm.all_reduce_sum(values);
  const double factor = comm.size() * (comm.size() + 1) / 2.0;
  EXPECT_TRUE(at::equal(values.to(at::kFloat), pattern * factor));

  const at::Tensor whole = (pattern.narrow(0, 0, 996) * (comm.rank() + 1)).to(at::kBFloat16);  // 996 = 3 * 332
  if (996 % comm.size() != 0) GTEST_SKIP();
  const at::Tensor mine = comm.reduce_scatter_sum(whole);
  const int64_t chunk = 996 / comm.size();
  ASSERT_EQ(mine.scalar_type(), at::kBFloat16);
  EXPECT_TRUE(at::equal(mine.to(at::kFloat), pattern.narrow(0, chunk * comm.rank(), chunk) * factor));
}

TEST(MpiCommunicator, SplitGroupsRanksByColor) {
  Communicator& comm = world();
  // Rank 0 apart from the others (as trainer ranks apart from rollout ranks).
  const int color = comm.rank() == 0 ? 0 : 1;
  std::unique_ptr<Communicator> part = comm.split(color);
  EXPECT_EQ(part->size(), color == 0 ? 1 : comm.size() - 1);
  EXPECT_EQ(part->rank(), color == 0 ? 0 : comm.rank() - 1);
  std::vector<double> ranks{static_cast<double>(comm.rank())};
  part->all_reduce_sum(ranks);
  const double n = comm.size() - 1;
  EXPECT_EQ(ranks[0], color == 0 ? 0.0 : n * (n + 1) / 2);
  at::Tensor gathered = part->all_gather(at::full({2}, comm.rank(), at::kFloat));
  EXPECT_EQ(gathered.size(0), part->size());
  comm.barrier();  // the world still works beside it
}

TEST(MpiCommunicator, GatherDeliversEveryPartToTheRootOnly) {
  Communicator& comm = world();
  const int size = comm.size();
  // Each root in turn (the last is how ZeRO-3 shards reach a rollout rank); rank r sends
  // r * 10 + [0, 5) as bf16 (exact), so a part in the wrong row or a shifted one shows.
  for (int root = 0; root < size; ++root) {
    const at::Tensor local = (at::arange(5, at::kFloat) + 10.0 * comm.rank()).to(at::kBFloat16);
    at::Tensor out = comm.rank() == root ? at::full({size, 5}, -1.0, at::kBFloat16) : at::Tensor();
    comm.gather_into(out, local, root);
    if (comm.rank() != root) {
      EXPECT_FALSE(out.defined()) << "a rank other than the root got something";
      continue;
    }
    for (int r = 0; r < size; ++r)
      EXPECT_TRUE(at::equal(out[r].to(at::kFloat), at::arange(5, at::kFloat) + 10.0 * r)) << "root " << root << ", row " << r;
  }
  // The root's `out` must hold every part.
  if (comm.rank() == 0) {
    at::Tensor wrong = at::empty({size - 1, 5}, at::kBFloat16);
    EXPECT_THROW(comm.gather_into(wrong, at::zeros({5}, at::kBFloat16), 0), c10::Error);
  }
}

// Strings of different lengths (one empty) arrive whole, in rank order, on every rank; the
// padding to the longest one never leaks into a shorter string.
TEST(MpiCommunicator, StringsOfAnyLengthGatherInRankOrder) {
  Communicator& comm = world();
  auto text_of = [](int rank) {
    return rank == 1 ? std::string() : std::string(static_cast<size_t>(3 + 5 * rank), static_cast<char>('a' + rank));
  };
  const std::vector<std::string> gathered = all_gather_strings(comm, text_of(comm.rank()));
  ASSERT_EQ(gathered.size(), static_cast<size_t>(comm.size()));
  for (int r = 0; r < comm.size(); ++r) EXPECT_EQ(gathered[static_cast<size_t>(r)], text_of(r)) << "rank " << r;
  const std::vector<std::string> empty = all_gather_strings(comm, "");
  EXPECT_EQ(empty, std::vector<std::string>(static_cast<size_t>(comm.size())));
}

}  // namespace
}  // namespace grpo

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  const int failed = RUN_ALL_TESTS();
  grpo::shutdown_world();
  return failed;
}
