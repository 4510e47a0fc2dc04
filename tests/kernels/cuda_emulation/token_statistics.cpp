// kernels/cuda/token_statistics.cu compiled as C++ for the CPU emulation of CUDA (tests/kernels/cuda_emulation.h;
// the target grpo_kernels_emulated defines GRPO_CUDA_EMULATION).
#include "kernels/cuda/token_statistics.cu"
