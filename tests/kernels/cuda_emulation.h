#pragma once
// A CPU emulation of the CUDA execution model, enough to compile kernels/cuda's sources as C++
// (kernels/cuda/common.cuh includes this under GRPO_CUDA_EMULATION) and run their logic in CI,
// which has no GPU. A launch runs its blocks one after another; a block's threads are OS threads
// that meet at __syncthreads() and, per warp of 32, at shuffles; __shared__ variables become
// function statics, shared by the block's threads (blocks never overlap). A thread that returns
// leaves the barriers, as on current GPUs.
//
// What it checks: indices, reductions, the barriers the data needs, launch shapes (at most 1,024
// threads a block, 65,535 blocks in y and z, a CUB block size equal to the launch's). What it
// cannot: registers, shared-memory limits, timing, or the GPU's own rounding of expf and friends
// (here the C library's). CUB's block reduction and scan are folds in thread order; a reduction's
// result is defined in thread 0 only, as in CUB, and the other threads get a poisoned value
// (NaN bits) so that code relying on it fails.

#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(threads)
#define __shared__ static

using __nv_bfloat16 = c10::BFloat16;  // converts from float rounding to nearest even, as __float2bfloat16_rn
inline float __bfloat162float(__nv_bfloat16 x) { return static_cast<float>(x); }
inline __nv_bfloat16 __float2bfloat16_rn(float x) { return __nv_bfloat16(x); }

// Separate roundings: the emulation's translation units are built with -ffp-contract=off.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline unsigned __float_as_uint(float x) {
  unsigned bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}
inline float __uint_as_float(unsigned bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}
inline unsigned long long __double2ull_rz(double x) { return static_cast<unsigned long long>(x); }

// CUDA's device-side min and max over integers of possibly different types.
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
  return a < b ? a : b;
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}

template <typename T>
inline T atomicAdd(T* address, T value) {
  return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
}

using cudaStream_t = void*;
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };

namespace grpo_emulation {

inline constexpr int kMultiprocessors = 132;  // an H100/H200's

inline cudaError_t& last_error() {
  static cudaError_t error = cudaSuccess;
  return error;
}

// A reusable barrier for `count` threads; a thread that leaves lowers the count.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const long generation = generation_;
    if (++arrived_ >= count_) {
      release();
    } else {
      changed_.wait(lock, [&] { return generation != generation_; });
    }
  }
  void leave() {
    std::lock_guard<std::mutex> lock(mutex_);
    --count_;
    if (count_ > 0 && arrived_ >= count_) release();
  }

 private:
  void release() {
    arrived_ = 0;
    ++generation_;
    changed_.notify_all();
  }
  std::mutex mutex_;
  std::condition_variable changed_;
  int count_, arrived_ = 0;
  long generation_ = 0;
};

struct Block {
  explicit Block(int threads) : all(threads), exchange(static_cast<size_t>(threads)) {
    for (int first = 0; first < threads; first += 32) warps.push_back(std::make_unique<Barrier>(std::min(32, threads - first)));
  }
  Barrier all;
  std::vector<std::unique_ptr<Barrier>> warps;
  std::vector<unsigned long long> exchange;  // one shuffle slot per thread
};

inline thread_local dim3 thread_index, block_index, block_dim, grid_dim;
inline thread_local Block* current_block = nullptr;

inline unsigned flat_thread() { return thread_index.x + block_dim.x * (thread_index.y + block_dim.y * thread_index.z); }

// The launch's threads are made once and run every block in turn: thread 0 sets up the block's
// barriers, all run the kernel, and all meet before the next block reuses the statics.
inline void run(dim3 grid, dim3 block, const std::function<void()>& body) {
  const unsigned threads = block.x * block.y * block.z;
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535) {
    last_error() = cudaErrorInvalidConfiguration;
    return;
  }
  Barrier between_blocks(static_cast<int>(threads));
  std::unique_ptr<Block> state;
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      thread_index = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
      block_dim = block;
      grid_dim = grid;
      for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
          for (unsigned x = 0; x < grid.x; ++x) {
            if (t == 0) state = std::make_unique<Block>(static_cast<int>(threads));
            between_blocks.wait();
            block_index = dim3(x, y, z);
            current_block = state.get();
            body();
            current_block->warps[t / 32]->leave();
            current_block->all.leave();
            between_blocks.wait();
          }
    });
  for (auto& thread : pool) thread.join();
}

// GRPO_LAUNCH(kernel, grid, block, stream)(arguments...) runs the kernel on the emulation.
template <typename... Params>
auto launch(dim3 grid, dim3 block, void (*kernel)(Params...)) {
  return [=](auto&&... arguments) { run(grid, block, [&] { kernel(static_cast<Params>(arguments)...); }); };
}

template <typename T>
T poisoned() {
  static_assert(std::is_trivially_copyable<T>::value, "poisoned: a plain value");
  T value;
  std::memset(static_cast<void*>(&value), 0xFF, sizeof value);  // NaN in every float
  return value;
}

}  // namespace grpo_emulation

#define threadIdx (::grpo_emulation::thread_index)
#define blockIdx (::grpo_emulation::block_index)
#define blockDim (::grpo_emulation::block_dim)
#define gridDim (::grpo_emulation::grid_dim)
#define GRPO_LAUNCH(kernel, grid, block, stream) ::grpo_emulation::launch(dim3(grid), dim3(block), &kernel)

inline void __syncthreads() { grpo_emulation::current_block->all.wait(); }

template <typename T>
inline T __shfl_xor_sync(unsigned /*mask*/, T value, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(unsigned long long), "__shfl_xor_sync: a value of at most 8 bytes");
  auto& block = *grpo_emulation::current_block;
  const unsigned self = grpo_emulation::flat_thread(), warp = self / 32, other = warp * 32 + ((self % 32) ^ lane_mask);
  unsigned long long slot = 0;
  std::memcpy(&slot, &value, sizeof value);
  block.exchange[self] = slot;
  block.warps[warp]->wait();
  slot = block.exchange[other];
  block.warps[warp]->wait();  // everyone has read before the next shuffle writes
  T result;
  std::memcpy(&result, &slot, sizeof result);
  return result;
}

inline cudaError_t cudaGetLastError() {
  const cudaError_t error = grpo_emulation::last_error();
  grpo_emulation::last_error() = cudaSuccess;
  return error;
}
inline const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaSuccess ? "no error" : error == cudaErrorInvalidValue ? "invalid argument" : "invalid configuration";
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
  *value = grpo_emulation::kMultiprocessors;
  return cudaSuccess;
}

namespace cub {
namespace detail {

// The calling thread's index; aborts when the block is not the size the CUB class was built for.
inline unsigned thread_in_block_of(int threads, const char* what) {
  const unsigned size = blockDim.x * blockDim.y * blockDim.z;
  if (static_cast<int>(size) != threads) {
    std::fprintf(stderr, "cub::%s<%d> in a block of %u threads\n", what, threads, size);
    std::abort();
  }
  return grpo_emulation::flat_thread();
}

}  // namespace detail

template <typename T, int kThreads>
class BlockReduce {
 public:
  struct TempStorage {
    T values[kThreads];
  };
  explicit BlockReduce(TempStorage& storage) : storage_(storage) {}

  T Sum(T value) {
    return Reduce(value, [](const T& a, const T& b) { return a + b; });
  }
  template <typename Op>
  T Reduce(T value, Op op) {
    const unsigned self = detail::thread_in_block_of(kThreads, "BlockReduce");
    storage_.values[self] = value;
    __syncthreads();
    T result = storage_.values[0];
    if (self == 0)
      for (int i = 1; i < kThreads; ++i) result = op(result, storage_.values[i]);
    __syncthreads();
    return self == 0 ? result : grpo_emulation::poisoned<T>();
  }

 private:
  TempStorage& storage_;
};

template <typename T, int kThreads>
class BlockScan {
 public:
  struct TempStorage {
    T values[kThreads];
  };
  explicit BlockScan(TempStorage& storage) : storage_(storage) {}

  // Every thread gets the sum of the inputs before its own and the sum of all.
  void ExclusiveSum(T input, T& output, T& block_aggregate) {
    const unsigned self = detail::thread_in_block_of(kThreads, "BlockScan");
    storage_.values[self] = input;
    __syncthreads();
    T before = T(), all = T();
    for (int i = 0; i < kThreads; ++i) {
      if (i == static_cast<int>(self)) before = all;
      all = all + storage_.values[i];
    }
    __syncthreads();
    output = before;
    block_aggregate = all;
  }

 private:
  TempStorage& storage_;
};

}  // namespace cub
