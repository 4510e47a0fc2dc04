#include "trainer/dynamic_sampling.h"

#include <algorithm>

#include <ATen/ATen.h>

namespace grpo {

std::vector<GroupRef> first_signal_groups(const std::vector<std::vector<bool>>& has_signal, int64_t wanted) {
  std::vector<GroupRef> kept;
  for (size_t round = 0; round < has_signal.size(); ++round)
    for (size_t prompt = 0; prompt < has_signal[round].size(); ++prompt) {
      if (static_cast<int64_t>(kept.size()) >= wanted) return kept;
      if (has_signal[round][prompt]) kept.push_back({static_cast<int64_t>(round), static_cast<int64_t>(prompt)});
    }
  return kept;
}

std::vector<GroupRef> filled_with_flat_groups(std::vector<GroupRef> kept, const std::vector<std::vector<bool>>& has_signal,
                                              int64_t wanted) {
  for (size_t round = 0; round < has_signal.size(); ++round)
    for (size_t prompt = 0; prompt < has_signal[round].size(); ++prompt) {
      if (static_cast<int64_t>(kept.size()) >= wanted) return kept;
      if (!has_signal[round][prompt]) kept.push_back({static_cast<int64_t>(round), static_cast<int64_t>(prompt)});
    }
  return kept;
}

std::vector<bool> groups_with_signal(const std::vector<float>& rewards, int64_t group_size) {
  std::vector<bool> signal;
  for (size_t start = 0; start + static_cast<size_t>(group_size) <= rewards.size(); start += static_cast<size_t>(group_size)) {
    const auto [lo, hi] = std::minmax_element(rewards.begin() + static_cast<std::ptrdiff_t>(start),
                                              rewards.begin() + static_cast<std::ptrdiff_t>(start + static_cast<size_t>(group_size)));
    signal.push_back(*lo != *hi);
  }
  return signal;
}

RolloutBatch gather_rows(const std::vector<const RolloutBatch*>& batches,
                         const std::vector<std::pair<size_t, int64_t>>& rows, int64_t pad_id) {
  const int64_t n = static_cast<int64_t>(rows.size());
  int64_t prompt_width = 1, completion_width = 1;
  for (const auto& [b, row] : rows) {
    prompt_width = std::max(prompt_width, batches[b]->prompt_mask[row].sum().item<int64_t>());
    completion_width = std::max(completion_width, batches[b]->completion_mask[row].sum().item<int64_t>());
  }
  RolloutBatch out;
  out.group_size = batches.empty() ? 1 : batches.front()->group_size;
  out.prompt_ids = at::full({n, prompt_width}, pad_id, at::kLong);
  out.prompt_mask = at::zeros({n, prompt_width}, at::kBool);
  out.completion_ids = at::full({n, completion_width}, pad_id, at::kLong);
  out.completion_mask = at::zeros({n, completion_width}, at::kBool);
  out.sampling_logp = at::zeros({n, completion_width}, at::kFloat);
  for (int64_t i = 0; i < n; ++i) {
    const auto& [b, row] = rows[static_cast<size_t>(i)];
    const RolloutBatch& in = *batches[b];
    const int64_t p = in.prompt_mask[row].sum().item<int64_t>(), c = in.completion_mask[row].sum().item<int64_t>();
    const int64_t in_width = in.prompt_ids.size(1);
    out.prompt_ids[i].narrow(0, prompt_width - p, p).copy_(in.prompt_ids[row].narrow(0, in_width - p, p));
    out.prompt_mask[i].narrow(0, prompt_width - p, p).fill_(true);
    out.completion_ids[i].narrow(0, 0, c).copy_(in.completion_ids[row].narrow(0, 0, c));
    out.completion_mask[i].narrow(0, 0, c).fill_(true);
    out.sampling_logp[i].narrow(0, 0, c).copy_(in.sampling_logp[row].narrow(0, 0, c));
    out.finish_reasons.push_back(in.finish_reasons[static_cast<size_t>(row)]);
    out.prompt_index.push_back(i / out.group_size);
  }
  return out;
}

}  // namespace grpo
