#include "trainer/frozen_model.h"

#include <stdexcept>

#include <fmt/format.h>

#include "trainer/train_common.h"

namespace grpo {

FrozenModel load_frozen_model(const ModelConfig& model, const Config& config, Communicator& comm, const std::string& what) {
  const bool stage3 = config.trainer.zero_stage == 3;
  StatusOr<Policy> loaded = load_policy(model, static_cast<uint64_t>(config.trainer.seed), /*deferred=*/stage3);
  if (!loaded) {
    // The loader names model.path, which this model was not read from.
    std::string message = loaded.status().message();
    if (message.rfind("model.path: ", 0) == 0) message.erase(0, 12);
    throw std::runtime_error(what + ": " + message);
  }
  FrozenModel out;
  out.policy = std::move(loaded).value();
  for (auto& p : out.policy.model->parameters()) p.set_requires_grad(false);
  if (stage3) {
    const at::ScalarType model_dtype = out.policy.model->parameters().front().scalar_type();
    out.sharded = out.policy.mapped_weights.empty()
                      ? shard(out.policy.model, comm, shard_options(config.trainer))
                      : shard(out.policy.model, comm, shard_options(config.trainer),
                              slices_of(out.policy.mapped_weights, model_dtype));
    out.policy.mapped_weights.clear();  // the shards hold copies; unmaps the files
  }
  return out;
}

Status check_teacher_matches(const Policy& student, const Policy& teacher, const std::string& student_path,
                             const std::string& teacher_path) {
  const DecoderOptions& s = student.model->options();
  const DecoderOptions& t = teacher.model->options();
  if (s.vocab_size != t.vocab_size)
    return Status::error(fmt::format("distill.teacher_path: the teacher {} has a vocabulary of {} tokens, the student {} "
                                     "(model.path) {}; on-policy distillation needs one tokenizer for both",
                                     teacher_path, t.vocab_size, student_path, s.vocab_size));
  if (student.tokenizer->vocab_size() != teacher.tokenizer->vocab_size())
    return Status::error(fmt::format("distill.teacher_path: the teacher {}'s tokenizer has {} tokens, the student {}'s "
                                     "(model.path) {}; on-policy distillation needs one tokenizer for both",
                                     teacher_path, teacher.tokenizer->vocab_size(), student_path,
                                     student.tokenizer->vocab_size()));
  // Same size is not yet the same vocabulary: a probe text must become the same ids.
  const std::string probe = "<think>Add 1234 and 987: 4 + 7 = 11, carry 1.</think> <answer>2221</answer>";
  if (student.tokenizer->encode(probe) != teacher.tokenizer->encode(probe))
    return Status::error(fmt::format("distill.teacher_path: the teacher {} and the student {} (model.path) tokenize the "
                                     "same text differently; on-policy distillation needs one tokenizer for both",
                                     teacher_path, student_path));
  if (t.max_position_embeddings < s.max_position_embeddings)
    return Status::error(fmt::format("distill.teacher_path: the teacher {} has a context of {} positions, shorter than "
                                     "the student {}'s (model.path) {}; the teacher must score every sampled sequence",
                                     teacher_path, t.max_position_embeddings, student_path, s.max_position_embeddings));
  return Status::ok();
}

FrozenModel load_teacher(const Config& config, const Policy& student, Communicator& comm) {
  ModelConfig teacher_config = config.model;
  teacher_config.path = config.distill.teacher_path;
  teacher_config.chat_template.clear();  // the teacher scores the student's token ids; it renders nothing
  FrozenModel teacher = load_frozen_model(teacher_config, config, comm, "distill.teacher_path");
  if (Status s = check_teacher_matches(student, teacher.policy, config.model.path, config.distill.teacher_path); !s.is_ok())
    throw std::runtime_error(s.message());
  return teacher;
}

}  // namespace grpo
