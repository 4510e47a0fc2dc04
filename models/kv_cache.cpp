#include "models/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <ATen/ATen.h>

#include "kernels/attention.h"
#include "kernels/decode_attention.h"

namespace grpo {

void KvCache::keep_rows(const at::Tensor& rows) {
  const int64_t n = rows.size(0);
  for (auto* list : {&keys, &values})
    for (at::Tensor& t : *list) {
      t.narrow(0, 0, n).copy_(t.index_select(0, rows));
      t = t.narrow(0, 0, n);
    }
  key_mask.narrow(0, 0, n).copy_(key_mask.index_select(0, rows));
  key_mask = key_mask.narrow(0, 0, n);
  next_position = next_position.index_select(0, rows);
  if (prefix_row.defined()) {
    // The prefix stays where it is; the kept rows remember which prefix row they read.
    prefix_row = prefix_row.index_select(0, rows);
    prefix_group = 0;
  }
}

void KvCache::share_prefix(const KvCache& prefix, int64_t group) {
  TORCH_CHECK(group >= 1 && prefix.batch() * group == batch(), "KvCache::share_prefix: ", prefix.batch(),
              " prefix rows x ", group, " != ", batch(), " rows");
  prefix_keys.clear();
  prefix_values.clear();
  for (const at::Tensor& t : prefix.keys) prefix_keys.push_back(t.narrow(2, 0, prefix.length));
  for (const at::Tensor& t : prefix.values) prefix_values.push_back(t.narrow(2, 0, prefix.length));
  prefix_mask = prefix.key_mask.narrow(1, 0, prefix.length);
  prefix_row = at::arange(prefix.batch(), next_position.options()).repeat_interleave(group);
  prefix_group = group;
}

bool KvCache::decodes_in_place(int64_t t) const {
  return t == 1 && !keys.empty() && decode_attention_has_kernel(keys[0], keys[0]);
}

KvCache KvCache::rows(int64_t first, int64_t count) const {
  TORCH_CHECK(first >= 0 && count >= 1 && first + count <= batch(), "KvCache::rows: rows [", first, ", ",
              first + count, ") of ", batch());
  KvCache view = *this;
  for (auto* list : {&view.keys, &view.values})
    for (at::Tensor& t : *list) t = t.narrow(0, first, count);
  view.key_mask = key_mask.narrow(0, first, count);
  view.next_position = next_position.narrow(0, first, count);
  if (prefix_row.defined()) {
    view.prefix_row = prefix_row.narrow(0, first, count);
    view.prefix_group = 0;  // the view's rows need not start a group: they read the prefix by index
  }
  return view;
}

void KvCache::take_counters(const KvCache& view) {
  length = view.length;
  filled = view.filled;
}

void KvCache::reset_rows(int64_t first, int64_t count, const at::Tensor& positions) {
  key_mask.narrow(0, first, count).fill_(false);
  next_position.narrow(0, first, count).copy_(positions);
}

at::Tensor KvCache::begin_append(const at::Tensor& mask) {
  const int64_t b = mask.size(0), t = mask.size(1);
  TORCH_CHECK(batch() == b, "decoder: cache holds ", batch(), " rows, input has ", b);
  if (ring && t == 1 && length == capacity()) length = 0;
  TORCH_CHECK(length + t <= capacity(), "decoder: cache capacity ", capacity(), " exceeded");
  key_mask.narrow(1, length, t).copy_(mask);
  const at::Tensor own = key_mask.narrow(1, 0, std::max(filled, length + t));
  if (!prefix_row.defined()) return own;
  return at::cat({prefix_mask.index_select(0, prefix_row), own}, 1);
}

void KvCache::end_append(const at::Tensor& mask) {
  length += mask.size(1);
  filled = std::max(filled, length);
  next_position.add_(mask.to(at::kLong).sum(1));  // in place: row views (rows()) write through
}

at::Tensor KvCache::attention_bias(const at::Tensor& key_valid, int64_t t, at::ScalarType dtype) const {
  const auto device = key_valid.device();
  // A large finite negative (not -inf): a padding query row that sees no key stays finite.
  const double lowest = dtype == at::kBFloat16 ? -3.3895313892515355e38
                        : dtype == at::kHalf   ? -65504.0
                                               : static_cast<double>(std::numeric_limits<float>::lowest());
  if (t == 1) {
    // One query (a decode step) sits at the newest slot: every other slot is its past, only
    // padding is masked.
    return at::zeros(key_valid.sizes(), key_valid.options().dtype(dtype))
        .masked_fill_(key_valid.logical_not(), lowest)
        .view({key_valid.size(0), 1, 1, key_valid.size(1)});
  }
  const int64_t query_offset = prefix_width() + length, s = key_valid.size(1);
  const at::Tensor query_slot = at::arange(query_offset, query_offset + t, at::TensorOptions().dtype(at::kLong).device(device));
  const at::Tensor key_slot = at::arange(s, at::TensorOptions().dtype(at::kLong).device(device));
  // Only the tokens of this call can lie in a query's future: a ring cache's slots past them are
  // older tokens.
  const at::Tensor future = (key_slot.unsqueeze(0) > query_slot.unsqueeze(1)) & (key_slot < query_offset + t).unsqueeze(0);
  const at::Tensor allowed = (~future).unsqueeze(0) & key_valid.unsqueeze(1);  // [B, T, S]
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  return at::where(allowed, at::zeros({}, options), at::full({}, lowest, options)).unsqueeze(1);
}

at::Tensor KvCache::attend(size_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const at::Tensor& key_valid, const at::Tensor& bias) {
  const int64_t b = q.size(0), heads = q.size(1), t = q.size(2), hd = q.size(3), kv = k.size(1);
  const int64_t group = heads / kv;
  keys[layer].narrow(2, length, t).copy_(k);
  values[layer].narrow(2, length, t).copy_(v);
  const int64_t own = std::max(filled, length + t);
  const at::Tensor own_k = keys[layer].narrow(2, 0, own), own_v = values[layer].narrow(2, 0, own);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  if (decodes_in_place(t)) {
    // A decode step sees every real key, in whatever slot order: read them in place.
    DecodeKeys cached;
    cached.keys = own_k;
    cached.values = own_v;
    cached.mask = key_mask.narrow(1, 0, own);
    if (prefix_row.defined()) {
      cached.prefix_keys = prefix_keys[layer];
      cached.prefix_values = prefix_values[layer];
      cached.prefix_mask = prefix_mask;
      cached.prefix_row = prefix_row;
    }
    return decode_attention(q.select(2, 0), cached, scale).unsqueeze(2);
  }
  if (!bias.defined()) return attention(q, own_k, own_v, key_valid, length);
  // Query head h reads kv head h / group: fold the group into the query rows instead of copying
  // keys and values group times.
  const at::Tensor grouped_q = q.reshape({b, kv, group * t, hd});
  at::Tensor own_scores = at::matmul(grouped_q, own_k.transpose(2, 3)).view({b, heads, t, own});
  if (!prefix_row.defined()) {
    const at::Tensor probs = at::softmax(own_scores * scale + bias, -1, at::kFloat).to(q.scalar_type());
    return at::matmul(probs.view({b, kv, group * t, own}), own_v).view({b, heads, t, hd});
  }
  const at::Tensor& pk = prefix_keys[layer];
  const at::Tensor& pv = prefix_values[layer];
  const int64_t p = pk.size(2);
  at::Tensor prefix_scores;
  const int64_t g = prefix_group;
  if (g > 0) {
    // Rows of one prefix row side by side as extra query rows: [R, kv, g * group * t, hd].
    const int64_t r = b / g;
    const at::Tensor stacked = grouped_q.view({r, g, kv, group * t, hd}).transpose(1, 2).reshape({r, kv, g * group * t, hd});
    prefix_scores = at::matmul(stacked, pk.transpose(2, 3))
                        .view({r, kv, g, group * t, p})
                        .transpose(1, 2)
                        .reshape({b, heads, t, p});
  } else {
    // Rows were dropped: read each row's prefix through its index (a transient per-layer gather).
    prefix_scores = at::matmul(grouped_q, pk.index_select(0, prefix_row).transpose(2, 3)).view({b, heads, t, p});
  }
  const at::Tensor probs =
      at::softmax(at::cat({prefix_scores, own_scores}, -1) * scale + bias, -1, at::kFloat).to(q.scalar_type());
  const at::Tensor prefix_probs = probs.narrow(-1, 0, p), own_probs = probs.narrow(-1, p, own);
  at::Tensor out = at::matmul(own_probs.reshape({b, kv, group * t, own}), own_v);  // [B, kv, group * t, hd]
  if (g > 0) {
    const int64_t r = b / g;
    const at::Tensor stacked = prefix_probs.reshape({r, g, kv, group * t, p}).transpose(1, 2).reshape({r, kv, g * group * t, p});
    out = out + at::matmul(stacked, pv).view({r, kv, g, group * t, hd}).transpose(1, 2).reshape({b, kv, group * t, hd});
  } else {
    out = out + at::matmul(prefix_probs.reshape({b, kv, group * t, p}), pv.index_select(0, prefix_row));
  }
  return out.view({b, heads, t, hd});
}

}  // namespace grpo
