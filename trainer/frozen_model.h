#pragma once
// Frozen models beside the policy: the KL reference (the starting model) and the teacher of
// on-policy distillation (distill.teacher_path). Both are loaded like the policy, without gradients
// or optimizer; at ZeRO-3 they are sharded like the policy, each rank reading only its slices.

#include <memory>

#include "core/config.h"
#include "dist/communicator.h"
#include "trainer/fsdp.h"
#include "trainer/policy.h"

namespace grpo {

struct FrozenModel {
  Policy policy;                           // policy.model carries no gradients
  std::unique_ptr<ShardedDecoder> sharded;  // stage 3: the model's shards (else null)
};

// `model` loaded and frozen with trainer.* of `config` (seed, zero_stage, shard options). Throws
// with `what` ("reference model", "distill.teacher_path") before the loader's message.
FrozenModel load_frozen_model(const ModelConfig& model, const Config& config, Communicator& comm, const std::string& what);

// The distillation teacher: distill.teacher_path with model.dtype and model.device. It must score
// the student's token ids, so its vocabulary (model and tokenizer) must be the student's and its
// context at least as long; a mismatch is an error naming both.
FrozenModel load_teacher(const Config& config, const Policy& student, Communicator& comm);

// The check load_teacher makes, for a loaded teacher: Status::ok() or the mismatch, naming both.
Status check_teacher_matches(const Policy& student, const Policy& teacher, const std::string& student_path,
                             const std::string& teacher_path);

}  // namespace grpo
