#pragma once
// NCCL collectives for CUDA tensors, bootstrapped over another communicator (MPI): rank 0 creates
// the NCCL unique id and broadcasts it, then every rank joins with its CUDA device. CPU tensors,
// host values, the barrier and abort go to the bootstrap communicator, so the trainer can use this
// one communicator for everything. Built when a CUDA toolkit with NCCL is found (GRPO_HAVE_NCCL);
// linked into the trainer when LibTorch has CUDA (docs/architecture.md).

#include <memory>
#include <string>

#include "dist/communicator.h"

namespace grpo {

// Every rank of `bootstrap` must call this together, each with its own CUDA device. Throws
// std::runtime_error naming the CUDA or NCCL call that failed.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, int cuda_device);

// The version of the NCCL library loaded at run time, e.g. "2.28.9".
std::string nccl_version();

// Number of CUDA devices the CUDA runtime sees (0 without a driver or device).
int nccl_visible_devices();

}  // namespace grpo
