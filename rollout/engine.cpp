#include "rollout/engine.h"

#include <algorithm>
#include <map>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <fmt/format.h>

#include "kernels/cpu_kernels.h"

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

// Weights up to this size are split over threads by rows (decode_row_parts); larger ones by
// output features, inside each product, so that each weight is read from memory once per step.
constexpr int64_t kDecodeSplitMaxWeightBytes = 64ll << 20;

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

std::vector<int64_t> to_vector(const at::Tensor& t) {
  const at::Tensor cpu = t.to(at::kCPU, at::kLong).contiguous();
  return {cpu.data_ptr<int64_t>(), cpu.data_ptr<int64_t>() + cpu.numel()};
}

// How many threads split a decode step's rows (GenerationRun::decode_forward): each part reads all
// the weights, so only where they are few enough to be read again from cache, and only for
// float32 CPU models whose step runs the packed kernels.
int64_t decode_row_parts(Decoder& model) {
  if (!runs_on_cpu_kernels(model->parameters()[0])) return 1;
  int64_t bytes = 0;
  for (const at::Tensor& p : model->parameters()) bytes += p.numel() * p.element_size();
  return bytes <= kDecodeSplitMaxWeightBytes ? at::get_num_threads() : 1;
}

// One call of generate(). Cache rows are organized as slots of G rows, one prompt per slot; the
// device holds every row's tokens, length and done flag, and the host learns them only every
// readback_interval steps (or never per token), when it refills free slots with waiting prompts
// or, once none wait, drops finished rows from the cache.
class GenerationRun {
 public:
  GenerationRun(Decoder& model, const std::vector<std::vector<int64_t>>& prompts, const GenerationOptions& options,
                const std::vector<uint64_t>& seeds, const Tokenizer* tokenizer)
      : model_(model), options_(options), seeds_(seeds), tokenizer_(tokenizer) {
    num_prompts_ = static_cast<int64_t>(prompts.size());
    group_ = options.group_size;
    max_new_ = options.max_new_tokens;
    device_ = model->parameters()[0].device();
    for (const auto& p : prompts) prompt_width_ = std::max<int64_t>(prompt_width_, static_cast<int64_t>(p.size()));
    // Left-pad the prompts so that every row's next token lands in the same cache slot.
    prompt_ids_ = at::full({num_prompts_, prompt_width_}, options.pad_id, at::kLong);
    prompt_mask_ = at::zeros({num_prompts_, prompt_width_}, at::kBool);
    for (int64_t i = 0; i < num_prompts_; ++i) {
      const int64_t len = static_cast<int64_t>(prompts[static_cast<size_t>(i)].size());
      prompt_ids_[i].narrow(0, prompt_width_ - len, len).copy_(at::tensor(prompts[static_cast<size_t>(i)], at::kLong));
      prompt_mask_[i].narrow(0, prompt_width_ - len, len).fill_(true);
    }
    for (const auto& s : options.stop_strings) longest_stop_ = std::max(longest_stop_, s.size());
    const auto long_options = at::TensorOptions().dtype(at::kLong).device(device_);
    if (!options.stop_token_ids.empty()) stop_ids_ = at::tensor(options.stop_token_ids, at::kLong).to(device_);

    const int64_t n = num_prompts_ * group_;
    out_tokens_ = at::full({n, max_new_ + 1}, options.pad_id, long_options);  // column max_new_: discarded writes
    out_logp_ = at::zeros({n, max_new_ + 1}, long_options.dtype(at::kFloat));
    final_length_.assign(static_cast<size_t>(n), 0);
    reasons_.assign(static_cast<size_t>(n), FinishReason::kLength);
    if (longest_stop_ > 0) tokens_seen_.resize(static_cast<size_t>(n));

    // Sized once: the prompt slots and, per row, the tokens it feeds back (all but its last).
    const int64_t slots = options.max_concurrent_prompts > 0 ? std::min(options.max_concurrent_prompts, num_prompts_)
                                                              : num_prompts_;
    const int64_t rows = slots * group_;
    // One sample per prompt and no prompt waiting: nothing to share or to reuse, so the prompt
    // and its tokens go in one plain cache, which saves the shared layout's extra products.
    single_pass_ = group_ == 1 && slots == num_prompts_;
    if (single_pass_) {
      cache_ = model->make_cache(rows, prompt_width_ + std::max<int64_t>(max_new_ - 1, 1));
    } else {
      prefix_ = model->make_cache(slots, prompt_width_);
      cache_ = model->make_cache(rows, std::max<int64_t>(max_new_ - 1, 1));
      cache_.ring = true;
    }
    decode_parts_ = decode_row_parts(model);
    out_row_ = at::zeros({rows}, long_options);
    length_ = at::zeros({rows}, long_options);
    done_ = at::zeros({rows}, long_options.dtype(at::kBool));
    stopped_ = at::zeros({rows}, long_options.dtype(at::kBool));
    row_out_.assign(static_cast<size_t>(rows), 0);
    row_start_.assign(static_cast<size_t>(rows), 0);
    row_finished_.assign(static_cast<size_t>(rows), false);
    slot_prompt_.assign(static_cast<size_t>(slots), -1);
    std::vector<int64_t> all_slots(static_cast<size_t>(slots));
    for (int64_t s = 0; s < slots; ++s) all_slots[static_cast<size_t>(s)] = s;
    admit(all_slots);
  }

  void run() {
    while (rows_may_continue()) {
      const int64_t chunk = std::min(options_.readback_interval, steps_left());
      const at::Tensor uniforms = chunk_uniforms(chunk);
      for (int64_t i = 0; i < chunk; ++i) decode_step(uniforms[i], /*feed=*/i + 1 < chunk || steps_left() > 1);
      read_back(chunk);
    }
  }

  RolloutBatch result() {
    const int64_t n = num_prompts_ * group_;
    int64_t width = 1;
    for (int64_t len : final_length_) width = std::max(width, len);
    const at::Tensor lengths = at::tensor(final_length_, at::kLong);
    RolloutBatch batch;
    batch.group_size = group_;
    batch.prompt_ids = prompt_ids_.repeat_interleave(group_, 0);
    batch.prompt_mask = prompt_mask_.repeat_interleave(group_, 0);
    batch.completion_mask = at::arange(width, at::kLong).unsqueeze(0) < lengths.unsqueeze(1);
    batch.completion_ids =
        out_tokens_.narrow(1, 0, width).to(at::kCPU).masked_fill(~batch.completion_mask, options_.pad_id).contiguous();
    batch.sampling_logp = out_logp_.narrow(1, 0, width).to(at::kCPU).masked_fill(~batch.completion_mask, 0).contiguous();
    batch.prompt_index.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) batch.prompt_index[static_cast<size_t>(i)] = i / group_;
    batch.finish_reasons = reasons_;
    return batch;
  }

 private:
  int64_t rows() const { return static_cast<int64_t>(row_out_.size()); }

  // Prefills the next waiting prompts into `slots` and starts their rows.
  void admit(const std::vector<int64_t>& slots) {
    std::vector<int64_t> prompts;
    for (size_t i = 0; i < slots.size() && next_prompt_ < num_prompts_; ++i) prompts.push_back(next_prompt_++);
    if (prompts.empty()) return;
    const auto k = static_cast<int64_t>(prompts.size());
    const at::Tensor which = at::tensor(prompts, at::kLong);
    const at::Tensor ids = prompt_ids_.index_select(0, which).to(device_);
    const at::Tensor mask = prompt_mask_.index_select(0, which).to(device_);
    // Only the last position's logits are needed: the head runs on one position per prompt
    // (at Qwen's vocabulary the head on every position was a quarter of the prefill's FLOPs).
    const auto prefill = [&](KvCache* cache) {
      const at::Tensor h = model_->hidden(ids, mask, cache);
      return model_->logits_from_hidden(h.narrow(1, prompt_width_ - 1, 1)).select(1, 0);
    };
    at::Tensor last_logits;  // [k, V]
    if (single_pass_) {
      last_logits = prefill(&cache_);
    } else if (k == prefix_.batch()) {  // every slot at once (the first admission): prefill in place
      prefix_.length = prefix_.filled = 0;
      prefix_.next_position.zero_();
      last_logits = prefill(&prefix_);
      cache_.share_prefix(prefix_, group_);
    } else {
      KvCache fresh = model_->make_cache(k, prompt_width_);
      last_logits = prefill(&fresh);
      const at::Tensor into = at::tensor(std::vector<int64_t>(slots.begin(), slots.begin() + k), at::kLong).to(device_);
      for (size_t l = 0; l < fresh.keys.size(); ++l) {
        prefix_.keys[l].index_copy_(0, into, fresh.keys[l]);
        prefix_.values[l].index_copy_(0, into, fresh.values[l]);
      }
      prefix_.key_mask.index_copy_(0, into, fresh.key_mask);
    }
    if (!logits_.defined()) logits_ = at::empty({rows(), last_logits.size(1)}, last_logits.options());
    const at::Tensor prompt_lengths = mask.to(at::kLong).sum(1);
    for (int64_t i = 0; i < k; ++i) {
      const int64_t slot = slots[static_cast<size_t>(i)], prompt = prompts[static_cast<size_t>(i)];
      const int64_t first = slot * group_;
      slot_prompt_[static_cast<size_t>(slot)] = prompt;
      if (!single_pass_) cache_.reset_rows(first, group_, prompt_lengths[i].expand({group_}));
      out_row_.narrow(0, first, group_).copy_(at::arange(prompt * group_, (prompt + 1) * group_, out_row_.options()));
      length_.narrow(0, first, group_).zero_();
      done_.narrow(0, first, group_).fill_(false);
      stopped_.narrow(0, first, group_).fill_(false);
      logits_.narrow(0, first, group_).copy_(last_logits[i].expand({group_, last_logits.size(1)}));
      for (int64_t j = 0; j < group_; ++j) {
        const auto row = static_cast<size_t>(first + j);
        row_out_[row] = prompt * group_ + j;
        row_start_[row] = step_;
        row_finished_[row] = false;
      }
    }
  }

  // Steps until every row the host has not seen finish reaches max_new_tokens.
  int64_t steps_left() const {
    int64_t left = 0;
    for (int64_t r = 0; r < rows(); ++r)
      if (!row_finished_[static_cast<size_t>(r)]) left = std::max(left, row_start_[static_cast<size_t>(r)] + max_new_ - step_);
    return left;
  }
  bool rows_may_continue() const { return steps_left() > 0; }

  // The uniform numbers [chunk, rows] of the next `chunk` steps: a row's k-th token draws
  // counter_uniform(seed, k), wherever and whenever the row runs.
  at::Tensor chunk_uniforms(int64_t chunk) const {
    std::vector<double> u(static_cast<size_t>(chunk * rows()));
    for (int64_t i = 0; i < chunk; ++i)
      for (int64_t r = 0; r < rows(); ++r) {
        const auto row = static_cast<size_t>(r);
        u[static_cast<size_t>(i * rows() + r)] =
            counter_uniform(seeds_[static_cast<size_t>(row_out_[row])], step_ + i - row_start_[row]);
      }
    return at::tensor(u, at::kDouble).view({chunk, rows()}).to(device_);
  }

  // Samples every row's next token and feeds it back, without reading anything to the host.
  void decode_step(const at::Tensor& uniforms, bool feed) {
    const TokenDraw drawn = sample_tokens_with_logprobs(logits_, options_.sampling, uniforms);
    const at::Tensor& next = drawn.tokens;
    const at::Tensor& logp = drawn.logprobs;
    const at::Tensor active = ~done_;
    // Finished rows write to the discarded last column.
    const at::Tensor flat = out_row_ * (max_new_ + 1) + at::where(active, length_, at::full_like(length_, max_new_));
    out_tokens_.view(-1).scatter_(0, flat, next);
    out_logp_.view(-1).scatter_(0, flat, logp);
    length_ += active.to(at::kLong);
    if (stop_ids_.defined()) {
      const at::Tensor hit = (next.unsqueeze(1) == stop_ids_.unsqueeze(0)).any(1) & active;
      stopped_ |= hit;
      done_ |= hit;
    }
    done_ |= length_ >= max_new_;
    ++step_;
    if (feed) logits_ = decode_forward(next);
  }

  // The model's forward over one token per row. On a CPU the rows are split into one part per
  // thread, each run whole on its own thread (docs/models.md, "Rollout engine"): one fork/join per
  // step instead of one per operation, and the small operations of every layer run in parallel.
  at::Tensor decode_forward(const at::Tensor& tokens) {
    const int64_t rows = cache_.batch(), parts = decode_parts_ > 1 ? std::min(decode_parts_, rows / 8) : 1;
    if (parts <= 1) return model_->forward(tokens.view({-1, 1}), at::Tensor(), &cache_).select(1, 0);
    std::vector<KvCache> views(static_cast<size_t>(parts));
    std::vector<at::Tensor> logits(static_cast<size_t>(parts));
    at::parallel_for(0, parts, 1, [&](int64_t first_part, int64_t last_part) {
      at::NoGradGuard no_grad;  // grad mode is per thread
      for (int64_t part = first_part; part < last_part; ++part) {
        const int64_t first = rows * part / parts, count = rows * (part + 1) / parts - first;
        auto& view = views[static_cast<size_t>(part)];
        view = cache_.rows(first, count);
        logits[static_cast<size_t>(part)] =
            model_->forward(tokens.narrow(0, first, count).view({-1, 1}), at::Tensor(), &view).select(1, 0);
      }
    });
    cache_.take_counters(views[0]);
    return at::cat(logits, 0);
  }

  // Reads the rows' state after `chunk` steps: records finished rows (checking stop strings on
  // the new tokens), then refills free slots or drops finished rows.
  void read_back(int64_t chunk) {
    const std::vector<int64_t> state = to_vector(at::cat({length_, done_.to(at::kLong), stopped_.to(at::kLong)}));
    std::vector<int64_t> new_tokens;  // [rows, chunk] when stop strings are checked
    if (longest_stop_ > 0) {
      std::vector<int64_t> from(static_cast<size_t>(rows()));
      for (int64_t r = 0; r < rows(); ++r)
        from[static_cast<size_t>(r)] = static_cast<int64_t>(tokens_seen_[static_cast<size_t>(row_out_[static_cast<size_t>(r)])].size());
      const at::Tensor columns = (at::tensor(from, at::kLong).unsqueeze(1) + at::arange(chunk, at::kLong)).clamp_max(max_new_);
      new_tokens = to_vector(out_tokens_.index_select(0, out_row_).gather(1, columns.to(device_)));
    }
    std::vector<int64_t> string_stopped;
    for (int64_t r = 0; r < rows(); ++r) {
      const auto row = static_cast<size_t>(r);
      if (row_finished_[row]) continue;
      const auto out = static_cast<size_t>(row_out_[row]);
      const int64_t len = state[row];
      const bool done = state[static_cast<size_t>(rows() + r)] != 0, stopped = state[static_cast<size_t>(2 * rows() + r)] != 0;
      if (longest_stop_ > 0) {
        std::vector<int64_t>& seen = tokens_seen_[out];
        for (int64_t i = 0; static_cast<int64_t>(seen.size()) < len; ++i) {
          seen.push_back(new_tokens[static_cast<size_t>(r * chunk + i)]);
          const bool is_stop_token = std::find(options_.stop_token_ids.begin(), options_.stop_token_ids.end(),
                                               seen.back()) != options_.stop_token_ids.end();
          if (!is_stop_token && hits_stop_string(*tokenizer_, seen, options_.stop_strings, longest_stop_)) {
            // The row ran on past its stop string on the device: its tokens from here are discarded.
            finish(r, static_cast<int64_t>(seen.size()), FinishReason::kStopString);
            string_stopped.push_back(r);
            break;
          }
        }
        if (row_finished_[row]) continue;
      }
      if (done) finish(r, len, stopped ? FinishReason::kStopToken : FinishReason::kLength);
    }
    if (!string_stopped.empty()) done_.index_fill_(0, at::tensor(string_stopped, at::kLong).to(device_), true);

    if (next_prompt_ < num_prompts_) {
      std::vector<int64_t> free_slots;
      for (int64_t s = 0; s < static_cast<int64_t>(slot_prompt_.size()); ++s) {
        bool all = true;
        for (int64_t j = 0; j < group_; ++j) all = all && row_finished_[static_cast<size_t>(s * group_ + j)];
        if (all) free_slots.push_back(s);
      }
      admit(free_slots);
      return;
    }
    // Nobody waits: finished rows stop costing compute once they are an eighth of the batch.
    std::vector<int64_t> keep;
    for (int64_t r = 0; r < rows(); ++r)
      if (!row_finished_[static_cast<size_t>(r)]) keep.push_back(r);
    if (keep.empty() || static_cast<int64_t>(keep.size()) * 8 > rows() * 7) return;
    const at::Tensor index = at::tensor(keep, at::kLong).to(device_);
    cache_.keep_rows(index);
    for (at::Tensor* t : {&out_row_, &length_, &done_, &stopped_, &logits_}) *t = t->index_select(0, index);
    std::vector<int64_t> out, start;
    for (int64_t r : keep) {
      out.push_back(row_out_[static_cast<size_t>(r)]);
      start.push_back(row_start_[static_cast<size_t>(r)]);
    }
    row_out_ = std::move(out);
    row_start_ = std::move(start);
    row_finished_.assign(keep.size(), false);
  }

  void finish(int64_t r, int64_t length, FinishReason reason) {
    const auto out = static_cast<size_t>(row_out_[static_cast<size_t>(r)]);
    row_finished_[static_cast<size_t>(r)] = true;
    final_length_[out] = length;
    reasons_[out] = reason;
  }

  Decoder& model_;
  const GenerationOptions& options_;
  const std::vector<uint64_t>& seeds_;
  const Tokenizer* tokenizer_;
  int64_t num_prompts_ = 0, group_ = 1, max_new_ = 1, prompt_width_ = 0;
  at::Device device_{at::kCPU};
  at::Tensor prompt_ids_, prompt_mask_;  // [prompts, P] on the host
  at::Tensor stop_ids_;                  // [stops] on the device, undefined when none
  size_t longest_stop_ = 0;

  int64_t decode_parts_ = 1;  // row parts of a decode step (decode_forward); 1: no split
  bool single_pass_ = false;  // G = 1, every prompt at once: cache_ holds prompt and tokens, no prefix_
  KvCache prefix_;  // [slots, P]: each slot's prompt, prefilled once
  KvCache cache_;   // [rows, max_new_tokens - 1] ring of the rows' own tokens, reading prefix_
  // Per cache row, on the device.
  at::Tensor out_row_;  // [rows] long: output row each cache row fills
  at::Tensor length_;   // [rows] long: tokens generated
  at::Tensor done_;     // [rows] bool
  at::Tensor stopped_;  // [rows] bool: ended by a stop token
  at::Tensor logits_;   // [rows, V] float32: each row's next-token logits
  // Per cache row, on the host (as of the last read-back).
  std::vector<int64_t> row_out_, row_start_;
  std::vector<bool> row_finished_;
  std::vector<int64_t> slot_prompt_;
  int64_t next_prompt_ = 0, step_ = 0;

  // Per output row [prompts * G].
  at::Tensor out_tokens_, out_logp_;  // [N, max_new_tokens + 1] on the device
  std::vector<int64_t> final_length_;
  std::vector<FinishReason> reasons_;
  std::vector<std::vector<int64_t>> tokens_seen_;  // only with stop strings
};

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
  TORCH_CHECK(options.readback_interval >= 1 && options.max_concurrent_prompts >= 0,
              "generate: readback_interval must be >= 1 and max_concurrent_prompts >= 0");
  const int64_t n = static_cast<int64_t>(prompts.size()) * options.group_size;
  TORCH_CHECK(static_cast<int64_t>(seeds.size()) == n, "generate: ", seeds.size(), " seeds for ", n, " rows");
  TORCH_CHECK(options.stop_strings.empty() || tokenizer != nullptr, "generate: stop strings need a tokenizer");
  for (const auto& p : prompts) TORCH_CHECK(!p.empty(), "generate: empty prompt");
  at::NoGradGuard no_grad;
  // Fused projections for this call only: their weight copies are freed when it returns.
  struct FusedScope {
    Decoder& model;
    bool was_on;
    ~FusedScope() { model->set_fused_inference(was_on); }
  } fused{model, model->fused_inference()};
  model->set_fused_inference(true);
  GenerationRun run(model, prompts, options, seeds, tokenizer);
  run.run();
  return run.result();
}

RolloutEngine::RolloutEngine(Decoder model, int64_t version) : model_(std::move(model)), version_(version) {
  TORCH_CHECK(model_, "RolloutEngine: no model");
}

void RolloutEngine::load_weights(int64_t version, const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> params = model_->parameters();
  TORCH_CHECK(tensors.size() == params.size(), "RolloutEngine::load_weights: ", tensors.size(), " tensors for ",
              params.size(), " parameters");
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    TORCH_CHECK(tensors[i].sizes() == params[i].sizes(), "RolloutEngine::load_weights: tensor ", i, " has shape ",
                tensors[i].sizes(), ", the parameter ", params[i].sizes());
    params[i].copy_(tensors[i]);
  }
  version_ = version;
}

RolloutBatch RolloutEngine::generate(const std::vector<std::vector<int64_t>>& prompts,
                                     const GenerationOptions& options, const std::vector<uint64_t>& seeds,
                                     const Tokenizer* tokenizer) {
  RolloutBatch batch = grpo::generate(model_, prompts, options, seeds, tokenizer);
  batch.policy_version = version_;
  return batch;
}

std::vector<double> unit_checksums(Decoder& model, const std::vector<at::Tensor>& params) {
  std::map<std::string, size_t> index;
  for (const auto& item : model->named_parameters()) index.emplace(item.key(), index.size());
  TORCH_CHECK(params.size() == index.size(), "unit_checksums: ", params.size(), " tensors for ", index.size(),
              " parameters");
  at::NoGradGuard no_grad;
  std::vector<double> sums;
  for (const DecoderUnit& unit : model->units()) {
    double sum = 0;
    for (const std::string& name : unit.param_names) {
      const at::Tensor flat = params[index.at(name)].detach().to(at::kCPU, at::kDouble).reshape({-1});
      const at::Tensor weights = at::arange(flat.numel(), flat.options()).fmod(7).add(1);
      sum += (flat * weights).sum().item<double>();
    }
    sums.push_back(sum);
  }
  return sums;
}

}  // namespace grpo
