#pragma once
// A Hugging Face `Qwen2ForSequenceClassification` / `LlamaForSequenceClassification`: the decoder
// with a bias-free `score` head (hidden -> num_labels) read at one pooled position per row. The
// pooling follows transformers 4.45: the position just before the FIRST token equal to
// pad_token_id (mod T), whatever the attention mask says.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "core/status.h"
#include "models/decoder.h"
#include "models/hf_config.h"

namespace grpo {

struct SequenceClassifierOptions {
  DecoderOptions decoder;
  int64_t num_labels = 1;               // `num_labels`, else the size of `id2label`, else 1
  std::optional<int64_t> pad_token_id;  // null: rows are pooled at their last real token
};

// Parses a *ForSequenceClassification config.json; `source` names the file in errors.
StatusOr<SequenceClassifierOptions> parse_sequence_classifier_config(const std::string& json_text,
                                                                     const std::string& source);

// HF's pooled position of each row of `input_ids` [B, T]: (index of the first pad_token_id - 1)
// mod T. Without a pad token id, the last position where `attention_mask` is 1 (T - 1 when the
// mask is undefined). Returns [B] long.
at::Tensor pooled_positions(const at::Tensor& input_ids, std::optional<int64_t> pad_token_id,
                            const at::Tensor& attention_mask = {});

struct ClassifierOutput {
  at::Tensor scores;          // [B, num_labels] float32, on the CPU
  at::Tensor pooled_hidden;   // [B, hidden] float32, on the CPU: the final normed state scored
  at::Tensor pooled_index;    // [B] long
};

class SequenceClassifier {
 public:
  // Reads DIR/config.json and the safetensors; `dtype` float32/bfloat16/float16 or "" for the
  // checkpoint's; `device` cpu/cuda.
  static StatusOr<SequenceClassifier> load(const std::string& dir, const std::string& dtype = "float32",
                                           const std::string& device = "cpu");

  // Scores `input_ids` [B, T] (any device); `attention_mask` [B, T] marks real tokens.
  ClassifierOutput forward(const at::Tensor& input_ids, const at::Tensor& attention_mask = {});
  // The score head at every position: [B, T, num_labels] float32 on the CPU.
  at::Tensor all_position_scores(const at::Tensor& input_ids);
  // Right-pads `rows` with the pad token (0 when there is none) and scores them in one batch.
  ClassifierOutput score_rows(const std::vector<std::vector<int64_t>>& rows);

  const SequenceClassifierOptions& options() const { return options_; }

 private:
  SequenceClassifier(SequenceClassifierOptions options, Decoder decoder, at::Tensor score_weight)
      : options_(std::move(options)), decoder_(std::move(decoder)), score_weight_(std::move(score_weight)) {}
  at::Tensor head(const at::Tensor& hidden) const;

  SequenceClassifierOptions options_;
  Decoder decoder_;
  at::Tensor score_weight_;  // [num_labels, hidden], on the decoder's device and dtype
};

}  // namespace grpo
