#pragma once
// A Hugging Face config.json of a Qwen2/Llama-family decoder, as the typed options the decoder
// is built from. Unsupported architectures and field values are errors that name them.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"

namespace grpo {

enum class DecoderArchitecture { kQwen2, kLlama };

// Llama 3.1-style frequency-dependent RoPE scaling (`rope_scaling.rope_type == "llama3"`).
struct Llama3RopeScaling {
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct DecoderOptions {
  DecoderArchitecture architecture = DecoderArchitecture::kQwen2;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // = num_heads when config.json omits it
  int64_t head_dim = 0;      // explicit `head_dim`, else hidden_size / num_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<Llama3RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; Llama with attention_bias
  bool o_bias = false;    // Llama attention_bias
  bool mlp_bias = false;  // Llama mlp_bias
  int64_t max_position_embeddings = 2048;
  std::string torch_dtype = "float32";  // stored dtype: float32 or bfloat16
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
};

// Parses config.json text; `source` names the file in errors.
StatusOr<DecoderOptions> parse_decoder_config(const std::string& json_text, const std::string& source);
StatusOr<DecoderOptions> load_decoder_config(const std::string& model_dir);

// config.json text that parse_decoder_config (and transformers) read back to the same options.
std::string decoder_config_json(const DecoderOptions& options);

}  // namespace grpo
