#include "rollout/engine.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

namespace grpo {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kLength: return "length";
  }
  return "?";
}

std::vector<uint64_t> rollout_seeds(uint64_t base_seed, const std::vector<uint64_t>& prompt_keys, int64_t group_size) {
  std::vector<uint64_t> seeds;
  for (uint64_t key : prompt_keys)
    for (int64_t g = 0; g < group_size; ++g) {
      uint64_t x = base_seed * 0x9E3779B97F4A7C15ULL ^ (key + 0x632BE59BD9B4E019ULL) * 0xBF58476D1CE4E5B9ULL ^
                   static_cast<uint64_t>(g) * 0x94D049BB133111EBULL;
      seeds.push_back(x ^ (x >> 29));
    }
  return seeds;
}

namespace {

// True when the newest tokens of `ids` complete one of the stop strings.
bool hits_stop_string(const Tokenizer& tokenizer, const std::vector<int64_t>& ids, const std::vector<std::string>& stops,
                      size_t longest_stop) {
  // Every byte-level token is at least one byte, so this many tokens cover any stop string (plus
  // a few for a character split across tokens).
  const size_t window = std::min(ids.size(), longest_stop + 3);
  const std::string tail = tokenizer.decode(std::vector<int64_t>(ids.end() - static_cast<std::ptrdiff_t>(window), ids.end()));
  for (const std::string& stop : stops)
    if (tail.find(stop) != std::string::npos) return true;
  return false;
}

}  // namespace

std::vector<int64_t> completion_tokens(const RolloutBatch& batch, int64_t row) {
  const int64_t len = batch.completion_mask[row].sum().item<int64_t>();
  const at::Tensor ids = batch.completion_ids[row].narrow(0, 0, len).to(at::kCPU).contiguous();
  return {ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + len};
}

RolloutBatch generate(Decoder& model, const std::vector<std::vector<int64_t>>& prompts,
                      const GenerationOptions& options, const std::vector<uint64_t>& seeds,
                      const Tokenizer* tokenizer) {
  TORCH_CHECK(!prompts.empty(), "generate: no prompts");
  TORCH_CHECK(options.group_size >= 1 && options.max_new_tokens >= 1, "generate: group_size and max_new_tokens must be >= 1");
  const int64_t num_prompts = static_cast<int64_t>(prompts.size());
  const int64_t g = options.group_size, n = num_prompts * g;
  TORCH_CHECK(static_cast<int64_t>(seeds.size()) == n, "generate: ", seeds.size(), " seeds for ", n, " rows");
  TORCH_CHECK(options.stop_strings.empty() || tokenizer != nullptr, "generate: stop strings need a tokenizer");
  at::NoGradGuard no_grad;
  const auto device = model->parameters()[0].device();

  // Left-pad the prompts so that every row's next token lands in the same cache slot.
  int64_t prompt_width = 0;
  for (const auto& p : prompts) {
    TORCH_CHECK(!p.empty(), "generate: empty prompt");
    prompt_width = std::max<int64_t>(prompt_width, static_cast<int64_t>(p.size()));
  }
  at::Tensor prompt_ids = at::full({num_prompts, prompt_width}, options.pad_id, at::kLong);
  at::Tensor prompt_mask = at::zeros({num_prompts, prompt_width}, at::kBool);
  for (int64_t i = 0; i < num_prompts; ++i) {
    const int64_t len = static_cast<int64_t>(prompts[i].size());
    prompt_ids[i].narrow(0, prompt_width - len, len).copy_(at::tensor(prompts[i], at::kLong));
    prompt_mask[i].narrow(0, prompt_width - len, len).fill_(true);
  }

  // Prefill each prompt once, then share its cache with its G samples.
  KvCache prompt_cache = model->make_cache(num_prompts, prompt_width + options.max_new_tokens);
  const at::Tensor prefill_logits =
      model->forward(prompt_ids.to(device), prompt_mask.to(device), &prompt_cache).select(1, prompt_width - 1);
  KvCache cache = g == 1 ? std::move(prompt_cache) : prompt_cache.repeat_rows(g);
  at::Tensor logits = g == 1 ? prefill_logits : prefill_logits.repeat_interleave(g, 0);  // [active, V]

  std::vector<std::vector<int64_t>> tokens(static_cast<size_t>(n));
  std::vector<std::vector<float>> logps(static_cast<size_t>(n));
  std::vector<FinishReason> reasons(static_cast<size_t>(n), FinishReason::kLength);
  std::vector<int64_t> active(static_cast<size_t>(n));  // original row of each cache row
  for (int64_t i = 0; i < n; ++i) active[static_cast<size_t>(i)] = i;
  std::vector<bool> finished(static_cast<size_t>(n), false);
  size_t longest_stop = 0;
  for (const auto& s : options.stop_strings) longest_stop = std::max(longest_stop, s.size());

  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    std::vector<uint64_t> row_seeds;
    for (int64_t row : active) row_seeds.push_back(seeds[static_cast<size_t>(row)]);
    const at::Tensor next = sample_next_tokens(logits, options.sampling, row_seeds, step);
    const at::Tensor next_logp = sampling_logprobs(logits, next, options.sampling.temperature);
    const at::Tensor next_cpu = next.to(at::kCPU), logp_cpu = next_logp.to(at::kCPU);
    const auto* next_data = next_cpu.data_ptr<int64_t>();
    const auto* logp_data = logp_cpu.data_ptr<float>();

    std::vector<int64_t> still_active;  // cache rows that continue
    for (size_t r = 0; r < active.size(); ++r) {
      const auto row = static_cast<size_t>(active[r]);
      if (finished[row]) continue;
      tokens[row].push_back(next_data[r]);
      logps[row].push_back(logp_data[r]);
      if (std::find(options.stop_token_ids.begin(), options.stop_token_ids.end(), next_data[r]) !=
          options.stop_token_ids.end()) {
        finished[row] = true;
        reasons[row] = FinishReason::kStopToken;
      } else if (longest_stop > 0 && hits_stop_string(*tokenizer, tokens[row], options.stop_strings, longest_stop)) {
        finished[row] = true;
        reasons[row] = FinishReason::kStopString;
      } else {
        still_active.push_back(static_cast<int64_t>(r));
      }
    }
    if (still_active.empty() || step + 1 == options.max_new_tokens) break;

    // Finished rows stop costing compute: drop them from the cache once enough have piled up.
    at::Tensor feed = next;
    const size_t finished_in_cache = active.size() - still_active.size();
    if (finished_in_cache * 8 >= active.size()) {
      const at::Tensor keep = at::tensor(still_active, at::kLong).to(device);
      cache.keep_rows(keep);
      feed = next.index_select(0, keep);
      std::vector<int64_t> kept;
      for (int64_t r : still_active) kept.push_back(active[static_cast<size_t>(r)]);
      active = std::move(kept);
    }
    logits = model->forward(feed.view({-1, 1}), at::Tensor(), &cache).select(1, 0);
  }

  int64_t width = 1;
  for (const auto& t : tokens) width = std::max<int64_t>(width, static_cast<int64_t>(t.size()));
  RolloutBatch batch;
  batch.group_size = g;
  batch.prompt_ids = prompt_ids.repeat_interleave(g, 0);
  batch.prompt_mask = prompt_mask.repeat_interleave(g, 0);
  batch.completion_ids = at::full({n, width}, options.pad_id, at::kLong);
  batch.completion_mask = at::zeros({n, width}, at::kBool);
  batch.sampling_logp = at::zeros({n, width}, at::kFloat);
  for (int64_t i = 0; i < n; ++i) {
    const auto& t = tokens[static_cast<size_t>(i)];
    const auto len = static_cast<int64_t>(t.size());
    if (len == 0) continue;
    batch.completion_ids[i].narrow(0, 0, len).copy_(at::tensor(t, at::kLong));
    batch.completion_mask[i].narrow(0, 0, len).fill_(true);
    batch.sampling_logp[i].narrow(0, 0, len).copy_(at::tensor(logps[static_cast<size_t>(i)], at::kFloat));
  }
  batch.prompt_index.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) batch.prompt_index[static_cast<size_t>(i)] = i / g;
  batch.finish_reasons = std::move(reasons);
  return batch;
}

}  // namespace grpo
