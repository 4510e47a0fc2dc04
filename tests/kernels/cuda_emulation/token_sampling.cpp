// kernels/cuda/token_sampling.cu compiled as C++ for the CPU emulation of CUDA (tests/kernels/cuda_emulation.h),
// its launch functions in grpo::cuda_emulated so that they sit beside the real ones.
#define GRPO_CUDA_EMULATION 1
#define cuda_kernels cuda_emulated
#include "kernels/cuda/token_sampling.cu"
