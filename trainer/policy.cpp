#include "trainer/policy.h"

#include <sys/stat.h>

#include <map>
#include <random>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/nn/module.h>

#include "core/atomic_file.h"
#include "dist/communicator.h"
#include "kernels/token_logprobs.h"

namespace grpo {
namespace {

// One token per byte plus the R1 tags and an end-of-text token.
std::string demo_tokenizer_json() {
  std::vector<AddedToken> added;
  int64_t id = 256;
  for (const char* tag : {"<think>", "</think>", "<answer>", "</answer>"}) added.push_back({id++, tag});
  added.push_back({id++, "<|endoftext|>", /*special=*/true});
  return Tokenizer::byte_level_json(added);
}

const char* kDemoTokenizerConfig = R"({"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "bos_token": null})";

DecoderOptions demo_options() {
  DecoderOptions o;  // the shape ../shared/notes/demo-feasibility.md found to learn on 2 cores
  o.architecture = DecoderArchitecture::kQwen2;
  o.vocab_size = 261;
  o.hidden_size = 128;
  o.intermediate_size = 336;
  o.num_layers = 4;
  o.num_heads = 4;
  o.num_kv_heads = 2;
  o.head_dim = 32;
  o.qkv_bias = true;
  o.tie_word_embeddings = true;
  o.max_position_embeddings = 512;
  o.eos_token_ids = {260};
  return o;
}

// builtin:demo-qwen2 is the demo's shape; builtin:demo-llama the same without attention biases;
// either takes ?layers=&hidden=&intermediate=&heads=&kv_heads= for a student of another size, and
// ?context= for its positions (default 512).
StatusOr<DecoderOptions> builtin_demo_options(const std::string& path) {
  const std::string name = path.substr(0, path.find('?'));
  DecoderOptions o = demo_options();
  if (name == "builtin:demo-llama") {
    o.architecture = DecoderArchitecture::kLlama;
    o.qkv_bias = false;
  } else if (name != "builtin:demo-qwen2") {
    return Status::error(fmt::format("model.path: unknown builtin model '{}' (builtin:demo-qwen2, builtin:demo-llama)",
                                     path));
  }
  if (name.size() == path.size()) return o;
  std::map<std::string, int64_t*> sizes = {{"layers", &o.num_layers}, {"hidden", &o.hidden_size},
                                           {"intermediate", &o.intermediate_size}, {"heads", &o.num_heads},
                                           {"kv_heads", &o.num_kv_heads}, {"context", &o.max_position_embeddings}};
  std::stringstream query(path.substr(name.size() + 1));
  for (std::string item; std::getline(query, item, '&');) {
    const auto eq = item.find('=');
    const auto it = sizes.find(item.substr(0, eq));
    int64_t value = 0;
    try {
      value = eq == std::string::npos ? 0 : std::stoll(item.substr(eq + 1));
    } catch (const std::exception&) {
    }
    if (it == sizes.end() || value < 1)
      return Status::error(fmt::format("model.path '{}': '{}' must be one of layers, hidden, intermediate, heads, "
                                       "kv_heads, context set to a positive integer",
                                       path, item));
    *it->second = value;
  }
  if (o.hidden_size % o.num_heads != 0 || o.num_heads % o.num_kv_heads != 0)
    return Status::error(fmt::format("model.path '{}': hidden ({}) must be a multiple of heads ({}), and heads of "
                                     "kv_heads ({})",
                                     path, o.hidden_size, o.num_heads, o.num_kv_heads));
  o.head_dim = o.hidden_size / o.num_heads;
  return o;
}

// transformers' Qwen2 initialization: N(0, 0.02) weights, zero biases, unit norms.
void init_weights(Decoder& model, uint64_t seed) {
  at::NoGradGuard no_grad;
  auto generator = at::detail::createCPUGenerator(seed);
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    at::Tensor p = item.value();
    if (name.find("norm") != std::string::npos) p.fill_(1.0);
    else if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) p.zero_();
    else p.normal_(0.0, 0.02, generator);
  }
}

}  // namespace

StatusOr<std::string> placement(DeviceKind kind) {
  if (kind == DeviceKind::kCpu) return std::string("cpu");
  if (!at::hasCUDA())
    return Status::error("model.device: cuda, but this build's LibTorch has no CUDA support (`grpo version` shows "
                         "the build); use model.device: cpu, or build against a CUDA LibTorch (docs/performance.md)");
  const auto count = static_cast<int>(torch::cuda::device_count());
  if (count == 0)
    return Status::error("model.device: cuda, but no CUDA device is visible (see nvidia-smi and CUDA_VISIBLE_DEVICES)");
  return fmt::format("cuda:{}", local_rank() % count);
}

StatusOr<Policy> load_policy(const ModelConfig& config, uint64_t seed, bool deferred) {
  Policy policy;
  const std::string dtype = config.dtype == DType::kBFloat16 ? "bfloat16" : "float32";
  if (config.path.empty()) return Status::error("model.path is required");
  StatusOr<std::string> placed = placement(config.device);
  if (!placed) return placed.status();
  const std::string device = *placed;
  if (config.path.rfind("builtin:demo-", 0) == 0) {
    StatusOr<DecoderOptions> options = builtin_demo_options(config.path);
    if (!options) return options.status();
    policy.model = Decoder(*options);
    init_weights(policy.model, seed);
    policy.model->to(torch::Device(device), dtype == "bfloat16" ? at::kBFloat16 : at::kFloat);
    policy.tokenizer_json = demo_tokenizer_json();
    policy.tokenizer_config_json = kDemoTokenizerConfig;
  } else if (config.path.rfind("builtin:", 0) == 0) {
    return Status::error(fmt::format("model.path: unknown builtin model '{}' (builtin:demo-qwen2, builtin:demo-llama)",
                                     config.path));
  } else {
    if (deferred) {
      StatusOr<MappedDecoder> mapped = map_decoder(config.path, dtype, device);
      if (!mapped) return mapped.status();
      policy.model = mapped->model;
      policy.mapped_weights = std::move(mapped->weights);
    } else {
      StatusOr<Decoder> model = load_decoder(config.path, dtype, device);
      if (!model) return model.status();
      policy.model = *model;
    }
    StatusOr<std::string> tok = read_file(config.path + "/tokenizer.json");
    if (!tok) return Status::error(fmt::format("model.path: {} has no tokenizer.json", config.path));
    policy.tokenizer_json = *tok;
    StatusOr<std::string> tok_config = read_file(config.path + "/tokenizer_config.json");
    if (tok_config) policy.tokenizer_config_json = *tok_config;
  }
  StatusOr<Tokenizer> tokenizer = Tokenizer::from_json(policy.tokenizer_json, policy.tokenizer_config_json, config.path);
  if (!tokenizer) return tokenizer.status();
  policy.tokenizer = *tokenizer;
  if (!config.chat_template.empty()) {
    StatusOr<ChatTemplate> chat = config.chat_template == "tokenizer"
                                      ? ChatTemplate::from_tokenizer(*policy.tokenizer)
                                      : ChatTemplate::named(config.chat_template, policy.tokenizer->bos_token());
    if (!chat) return Status::error("model.chat_template: " + chat.status().message());
    policy.chat = *chat;
  }
  policy.stop_token_ids = policy.model->options().eos_token_ids;
  if (auto eos = policy.tokenizer->eos_id()) policy.stop_token_ids.push_back(*eos);
  policy.pad_id = policy.tokenizer->pad_id().value_or(policy.tokenizer->eos_id().value_or(0));
  return policy;
}

std::vector<int64_t> encode_prompt(const Policy& policy, const std::string& prompt) {
  if (!policy.chat) return policy.tokenizer->encode(prompt, /*add_special_tokens=*/true);
  StatusOr<std::string> rendered = policy.chat->render({{"user", prompt}});
  if (!rendered) throw std::runtime_error(rendered.status().message());
  return policy.tokenizer->encode(*rendered);
}

Status export_policy(Policy& policy, const std::string& dir) {
  ::mkdir(dir.c_str(), 0755);
  if (Status s = save_decoder(policy.model, dir); !s.is_ok()) return s;
  return export_tokenizer(policy, dir);
}

Status export_tokenizer(const Policy& policy, const std::string& dir) {
  if (Status s = write_file_atomic(dir + "/tokenizer.json", policy.tokenizer_json); !s.is_ok()) return s;
  if (!policy.tokenizer_config_json.empty())
    return write_file_atomic(dir + "/tokenizer_config.json", policy.tokenizer_config_json);
  return Status::ok();
}

PaddedBatch pad_batch(const std::vector<std::vector<int64_t>>& prompts,
                      const std::vector<std::vector<int64_t>>& completions, int64_t pad_id) {
  const int64_t n = static_cast<int64_t>(prompts.size());
  int64_t p = 1, c = 1;
  for (const auto& x : prompts) p = std::max<int64_t>(p, static_cast<int64_t>(x.size()));
  for (const auto& x : completions) c = std::max<int64_t>(c, static_cast<int64_t>(x.size()));
  PaddedBatch b;
  b.prompt_ids = at::full({n, p}, pad_id, at::kLong);
  b.prompt_mask = at::zeros({n, p}, at::kBool);
  b.completion_ids = at::full({n, c}, pad_id, at::kLong);
  b.completion_mask = at::zeros({n, c}, at::kBool);
  for (int64_t i = 0; i < n; ++i) {
    const auto& pi = prompts[static_cast<size_t>(i)];
    const auto& ci = completions[static_cast<size_t>(i)];
    const auto lp = static_cast<int64_t>(pi.size()), lc = static_cast<int64_t>(ci.size());
    if (lp > 0) {
      b.prompt_ids[i].narrow(0, p - lp, lp).copy_(at::tensor(pi, at::kLong));
      b.prompt_mask[i].narrow(0, p - lp, lp).fill_(true);
    }
    if (lc > 0) {
      b.completion_ids[i].narrow(0, 0, lc).copy_(at::tensor(ci, at::kLong));
      b.completion_mask[i].narrow(0, 0, lc).fill_(true);
    }
  }
  return b;
}

GenerationOptions generation_options(const RolloutConfig& rollout, const Policy& policy, int64_t group_size) {
  GenerationOptions options;
  options.sampling.temperature = rollout.temperature;
  options.sampling.top_p = rollout.top_p;
  options.sampling.top_k = rollout.top_k;
  options.sampling.min_p = rollout.min_p;
  options.max_new_tokens = rollout.max_new_tokens;
  options.group_size = group_size;
  options.stop_token_ids = policy.stop_token_ids;
  options.stop_strings = rollout.stop;
  options.pad_id = policy.pad_id;
  options.max_concurrent_prompts = rollout.max_concurrent_prompts;
  options.readback_interval = rollout.readback_interval;
  return options;
}

at::Tensor completion_logprobs(Decoder& model, const at::Tensor& prompt_ids, const at::Tensor& prompt_mask,
                               const at::Tensor& completion_ids, const at::Tensor& completion_mask, double temperature,
                               at::Tensor* entropy) {
  const int64_t p = prompt_ids.size(1), c = completion_ids.size(1);
  const at::Device device = model->parameters().front().device();  // batches are built on the host
  const at::Tensor ids = at::cat({prompt_ids, completion_ids}, 1).to(device);
  const at::Tensor mask = at::cat({prompt_mask, completion_mask}, 1).to(device);
  // Only the positions that predict completion tokens go through the last layer's queries and MLP
  // and the head, the head in chunks of tokens (kernels/token_logprobs): the [N, C, V] float32
  // logits never exist at once.
  const at::Tensor hidden = model->hidden(ids, mask, nullptr, p - 1).narrow(1, 0, c);
  TokenLogprobsOptions options;
  options.temperature = temperature > 0 ? temperature : 1.0;
  options.with_entropy = entropy != nullptr;
  const at::Tensor targets = completion_ids.to(device), target_mask = completion_mask.to(device);
  // Through the root unit's seam, so that a sharded model (trainer/fsdp) gathers the head first.
  const at::Tensor stacked = model->call_unit(0, hidden, [&model, targets, target_mask, options](const at::Tensor& h) {
    const TokenLogprobs out = token_logprobs(h, model->head_weight(), targets, target_mask, options);
    return options.with_entropy ? at::stack({out.logprobs, out.entropy}) : out.logprobs.unsqueeze(0);
  });
  if (entropy) *entropy = stacked[1].detach();
  return stacked[0];
}

}  // namespace grpo
