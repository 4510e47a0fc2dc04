// What the launch functions report about the build and the device (kernels/cuda/launch.h).

#include "kernels/cuda/common.cuh"

namespace grpo {
namespace cuda_kernels {

bool built() { return true; }

std::string error_string(int error) {
  return error == kNotBuilt ? "built without a CUDA compiler" : cudaGetErrorString(static_cast<cudaError_t>(error));
}

int multiprocessor_count(int device) {
  int count = 0;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    cudaGetLastError();  // clear it: a later launch's check must not see this error
    return 0;
  }
  return count;
}

}  // namespace cuda_kernels
}  // namespace grpo
