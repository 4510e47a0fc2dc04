// What the launch functions report about the build and the device (kernels/cuda/launch.h).

#include <atomic>

#include "kernels/cuda/common.cuh"

namespace grpo {
namespace cuda_kernels {

constexpr int kMaxDevices = 64;

bool built() { return true; }

std::string error_string(int error) {
  return error == kNotBuilt ? "built without a CUDA compiler" : cudaGetErrorString(static_cast<cudaError_t>(error));
}

int multiprocessor_count(int device) {
  // Read once per device: decode attention asks on every layer of every step.
  static std::atomic<int> known[kMaxDevices] = {};
  if (device >= 0 && device < kMaxDevices)
    if (const int count = known[device].load(std::memory_order_relaxed)) return count;
  int count = 0;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();  // clear it: a later launch's check must not see this error
    return 0;
  }
  if (device >= 0 && device < kMaxDevices) known[device].store(count, std::memory_order_relaxed);
  return count;
}

}  // namespace cuda_kernels
}  // namespace grpo
