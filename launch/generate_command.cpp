// `grpo generate`: sample completions from a Hugging Face model, one JSON line per sample.

#include <unistd.h>

#include <sstream>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/jsonl.h"
#include "launch/commands.h"
#include "models/chat_template.h"
#include "rollout/engine.h"

namespace grpo {

const char* const kGenerateUsage =
    "grpo generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3 | --input prompts.jsonl) [options]\n\n"
    "  --tokenizer DIR        tokenizer.json directory (default: the model directory, if it has one);\n"
    "                         builtin:bytes is one token per byte, for tiny test models\n"
    "  --prompt TEXT          a prompt (repeatable); needs a tokenizer\n"
    "  --prompt-ids LIST      a prompt as comma-separated token ids (repeatable)\n"
    "  --input FILE           JSON lines with \"prompt\" (text), \"prompt_ids\" or \"messages\"\n"
    "  --chat                 render text prompts with the chat template (the tokenizer's, or --template)\n"
    "  --template NAME        qwen3, deepseek_v3 or r1_zero\n"
    "  --samples G            completions per prompt (default 1)\n"
    "  --max-new-tokens N     default 128\n"
    "  --temperature T        default 1.0; 0 is greedy\n"
    "  --top-p P --top-k K --min-p P   sampling filters (default off)\n"
    "  --seed S               default 0; a sample's tokens depend only on the seed, prompt and index\n"
    "  --stop TEXT            stop string (repeatable); EOS ids of the tokenizer and config always stop\n"
    "  --dtype float32|bfloat16  default float32\n\n"
    "Prints one JSON object per sample: prompt_index, sample, completion_ids, completion (with a\n"
    "tokenizer), finish_reason (stop_token, stop_string or length) and sum_logprob.";

namespace {

std::vector<int64_t> parse_id_list(const std::string& text) {
  std::vector<int64_t> ids;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) {
    char* end = nullptr;
    const long long id = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || id < 0) throw UsageError(fmt::format("--prompt-ids: '{}' is not a token id", item));
    ids.push_back(id);
  }
  if (ids.empty()) throw UsageError("--prompt-ids: no ids");
  return ids;
}

}  // namespace

int run_generate(const Arguments& args) {
  const std::string model_dir = args.required("--model");
  StatusOr<Decoder> model = load_decoder(model_dir, args.value("--dtype").value_or("float32"));
  if (!model) throw UsageError(model.status().message());

  std::optional<Tokenizer> tokenizer;
  const std::string tokenizer_dir = args.value("--tokenizer").value_or(model_dir);
  if (tokenizer_dir == "builtin:bytes") {
    tokenizer = Tokenizer::byte_level();
  } else if (args.value("--tokenizer") || ::access((tokenizer_dir + "/tokenizer.json").c_str(), F_OK) == 0) {
    StatusOr<Tokenizer> loaded = Tokenizer::load(tokenizer_dir);
    if (!loaded) throw UsageError(loaded.status().message());
    tokenizer = *loaded;
  }
  std::optional<ChatTemplate> chat;
  if (args.has_flag("--chat") || args.value("--template")) {
    if (!tokenizer) throw UsageError("--chat needs a tokenizer (--tokenizer DIR)");
    StatusOr<ChatTemplate> t = args.value("--template") ? ChatTemplate::named(*args.value("--template"), tokenizer->bos_token())
                                                        : ChatTemplate::from_tokenizer(*tokenizer);
    if (!t) throw UsageError(t.status().message());
    chat = *t;
  }

  auto encode_text = [&](const std::vector<ChatMessage>& messages, const std::string& where) {
    if (!tokenizer) throw UsageError(fmt::format("{}: text prompts need a tokenizer (--tokenizer DIR)", where));
    if (!chat) return tokenizer->encode(messages.back().content, /*add_special_tokens=*/true);
    StatusOr<std::string> rendered = chat->render(messages);
    if (!rendered) throw UsageError(fmt::format("{}: {}", where, rendered.status().message()));
    return tokenizer->encode(*rendered);  // a template writes its own special tokens
  };

  std::vector<std::vector<int64_t>> prompts;
  std::vector<std::string> origins;  // where each prompt came from, for errors
  if (args.values.count("--prompt"))
    for (const std::string& text : args.values.at("--prompt")) {
      prompts.push_back(encode_text({{"user", text}}, "--prompt"));
      origins.push_back(fmt::format("--prompt #{}", origins.size() + 1));
    }
  if (args.values.count("--prompt-ids"))
    for (const std::string& ids : args.values.at("--prompt-ids")) {
      prompts.push_back(parse_id_list(ids));
      origins.push_back(fmt::format("--prompt-ids #{}", origins.size() + 1));
    }
  if (auto input = args.value("--input")) {
    StatusOr<JsonlRecords> records = read_jsonl(*input);
    if (!records) throw UsageError(records.status().message());
    for (size_t i = 0; i < records->records.size(); ++i) {
      const nlohmann::json& r = records->records[i];
      const std::string where = fmt::format("{}:{}", *input, records->line_numbers[i]);
      if (r.contains("prompt_ids") && r["prompt_ids"].is_array()) {
        prompts.push_back(r["prompt_ids"].get<std::vector<int64_t>>());
      } else if (r.contains("prompt") && r["prompt"].is_string()) {
        prompts.push_back(encode_text({{"user", r["prompt"].get<std::string>()}}, where));
      } else if (r.contains("messages") && r["messages"].is_array()) {
        std::vector<ChatMessage> messages;
        for (const auto& m : r["messages"]) messages.push_back({m.value("role", ""), m.value("content", "")});
        if (!chat) throw UsageError(fmt::format("{}: \"messages\" need --chat or --template", where));
        prompts.push_back(encode_text(messages, where));
      } else {
        throw UsageError(fmt::format("{}: expected an object with \"prompt\", \"prompt_ids\" or \"messages\"", where));
      }
      origins.push_back(where);
    }
  }
  if (prompts.empty()) throw UsageError("no prompts: give --prompt, --prompt-ids or --input");
  const int64_t vocab = (*model)->options().vocab_size;
  for (const auto& p : prompts)
    for (int64_t id : p)
      if (id >= vocab) throw UsageError(fmt::format("prompt token id {} is outside the model's vocabulary ({})", id, vocab));

  GenerationOptions options;
  options.sampling.temperature = args.number("--temperature", 1.0);
  options.sampling.top_p = args.number("--top-p", 1.0);
  options.sampling.top_k = args.integer("--top-k", 0);
  options.sampling.min_p = args.number("--min-p", 0.0);
  options.max_new_tokens = args.integer("--max-new-tokens", 128);
  options.group_size = args.integer("--samples", 1);
  if (options.sampling.temperature < 0 || options.sampling.top_p <= 0 || options.sampling.top_p > 1 ||
      options.sampling.top_k < 0 || options.sampling.min_p < 0 || options.sampling.min_p >= 1 ||
      options.max_new_tokens < 1 || options.group_size < 1)
    throw UsageError("sampling options out of range (temperature >= 0, 0 < top-p <= 1, top-k >= 0, 0 <= min-p < 1, "
                     "max-new-tokens >= 1, samples >= 1)");
  // The model has no positions past its context: a longer prompt + completion would run slowly
  // into garbage, so it is refused up front, naming the prompt and the lengths.
  const int64_t context = (*model)->options().max_position_embeddings;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const int64_t length = static_cast<int64_t>(prompts[i].size());
    if (length + options.max_new_tokens > context)
      throw UsageError(fmt::format("{}: prompt of {} tokens + --max-new-tokens {} = {} exceeds the model's context of "
                                   "{} tokens (max_position_embeddings)",
                                   origins[i], length, options.max_new_tokens, length + options.max_new_tokens, context));
  }
  options.stop_token_ids = (*model)->options().eos_token_ids;
  if (tokenizer && tokenizer->eos_id()) options.stop_token_ids.push_back(*tokenizer->eos_id());
  if (args.values.count("--stop")) {
    if (!tokenizer) throw UsageError("--stop needs a tokenizer");
    options.stop_strings = args.values.at("--stop");
    for (const std::string& stop : options.stop_strings)
      if (stop.empty()) throw UsageError("--stop: an empty stop string matches everywhere; give the text to stop at");
  }
  if (tokenizer && tokenizer->pad_id()) options.pad_id = *tokenizer->pad_id();

  std::vector<uint64_t> keys(prompts.size());
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = i;
  const auto seed = static_cast<uint64_t>(args.integer("--seed", 0));
  const RolloutBatch batch = generate(*model, prompts, options, rollout_seeds(seed, keys, options.group_size),
                                      tokenizer ? &*tokenizer : nullptr);

  for (int64_t row = 0; row < batch.completion_ids.size(0); ++row) {
    const std::vector<int64_t> completion = completion_tokens(batch, row);
    nlohmann::json out;
    out["prompt_index"] = batch.prompt_index[static_cast<size_t>(row)];
    out["sample"] = row % options.group_size;
    if (tokenizer) out["completion"] = tokenizer->decode(completion);
    out["completion_ids"] = completion;
    out["finish_reason"] = finish_reason_name(batch.finish_reasons[static_cast<size_t>(row)]);
    out["sum_logprob"] = batch.sampling_logp[row].sum().item<double>();
    fmt::print("{}\n", out.dump());
  }
  return 0;
}

}  // namespace grpo
