#pragma once
// The decoder's key/value cache and the attention that reads it. A cache has the rows' own slots
// and, optionally, a prompt prefix shared by groups of rows (a prompt's G samples read one copy of
// its prefill instead of G copies).

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

namespace grpo {

// Keys and values of every layer for a fixed batch and capacity, allocated once and reused.
// All rows share one slot counter (`length`); `key_mask` marks which slots hold real tokens, so
// left-padded prompts of different lengths decode in lockstep.
struct KvCache {
  std::vector<at::Tensor> keys;    // per layer [batch, kv_heads, capacity, head_dim], RoPE applied
  std::vector<at::Tensor> values;  // per layer [batch, kv_heads, capacity, head_dim]
  at::Tensor key_mask;             // [batch, capacity] bool
  at::Tensor next_position;        // [batch] long: RoPE position of each row's next real token
  int64_t length = 0;              // next slot to write
  int64_t filled = 0;              // slots written at least once; attention reads slots [0, filled)
  // Ring mode: a one-token step at full capacity wraps to slot 0. Attention does not depend on slot
  // order (RoPE is applied before caching), so this is right as long as every row is reset
  // (reset_rows) before it would overwrite its own live tokens, which the engine guarantees.
  bool ring = false;

  // The shared prefix: row r reads prefix row prefix_row[r] before its own slots.
  std::vector<at::Tensor> prefix_keys;    // per layer [prefix rows, kv_heads, P, head_dim]
  std::vector<at::Tensor> prefix_values;  // per layer [prefix rows, kv_heads, P, head_dim]
  at::Tensor prefix_mask;                 // [prefix rows, P] bool
  at::Tensor prefix_row;                  // [batch] long; undefined: no prefix
  // > 0 when rows g*i .. g*i+g-1 read prefix row i (prefix_row = row / g): attention then reads the
  // prefix with one batched product per prefix row, no gather. 0 after rows were dropped.
  int64_t prefix_group = 0;

  int64_t batch() const { return key_mask.size(0); }
  int64_t capacity() const { return key_mask.size(1); }
  int64_t prefix_width() const { return prefix_row.defined() ? prefix_mask.size(1) : 0; }
  // Keeps rows `rows` (long indices), moved to the front; later calls use the first rows.size(0).
  void keep_rows(const at::Tensor& rows);
  // Makes the prefilled `prefix` (its first `prefix.length` slots) the shared prefix of this cache,
  // `group` consecutive rows per prefix row. Shares prefix's tensors: no copy.
  void share_prefix(const KvCache& prefix, int64_t group);
  // Rows [first, first + count) as a cache of their own sharing this one's storage: a forward over
  // it writes its tokens here. Views of disjoint rows may run at once (one decode step split over
  // threads); after they all took the same steps, take_counters(any view) brings this cache's slot
  // counters along (tensors need nothing: they were written in place).
  KvCache rows(int64_t first, int64_t count) const;
  void take_counters(const KvCache& view);
  // Rows [first, first + count) start over: no own tokens, next RoPE position `next_position`.
  void reset_rows(int64_t first, int64_t count, const at::Tensor& next_position);

  // Internal to the decoder's forward: starts appending `t` tokens whose mask is `mask` [B, t]
  // (wrapping a ring), and returns the keys the queries may see [B, prefix_width + own slots].
  at::Tensor begin_append(const at::Tensor& mask);
  void end_append(const at::Tensor& mask);
  // True when a step of `t` tokens attends through kernels/decode_attention (one token, a float32
  // cache on an AVX-512 CPU), which reads the slots in place and needs no bias.
  bool decodes_in_place(int64_t t) const;
  // True when attention over this cache needs an explicit bias (after begin_append of t tokens):
  // with a shared prefix, or once a ring has wrapped, slot order is no longer time order.
  bool needs_bias(int64_t t) const { return !decodes_in_place(t) && (prefix_row.defined() || filled > length + t); }
  // The additive bias [B, 1, t, S] for `key_valid` [B, S] from begin_append: only the tokens of this
  // call can lie in a query's future; padding keys are masked.
  at::Tensor attention_bias(const at::Tensor& key_valid, int64_t t, at::ScalarType dtype) const;
  // Writes k, v [B, KV, t, hd] of `layer` at the current slot and returns the causal attention of q
  // over the prefix and own slots, [B, H, t, hd]. A step that decodes_in_place reads the slots
  // through kernels/decode_attention. Otherwise, without `bias` (needs_bias false) it is the
  // memory-linear kernels/attention over own slots in time order; with `bias`
  // [B, 1, t, prefix_width + own slots], softmax(q k^T + bias) v over the prefix and own slots.
  at::Tensor attend(size_t layer, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                    const at::Tensor& key_valid, const at::Tensor& bias);
};

}  // namespace grpo
