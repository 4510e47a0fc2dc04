#pragma once
// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON naming each
// tensor's dtype, shape and byte range, then the raw little-endian data.

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

#include "core/status.h"

namespace grpo {

using TensorMap = std::map<std::string, at::Tensor>;

// Memory-maps one .safetensors file. The tensors are zero-copy views of the mapping (which stays
// alive as long as any of them does) and must not be written to. Every byte range is checked.
StatusOr<TensorMap> read_safetensors(const std::string& path);

// Reads a model directory: `model.safetensors`, or the shards that
// `model.safetensors.index.json` lists (each tensor from the file its weight_map names).
StatusOr<TensorMap> read_safetensors_dir(const std::string& dir);

// Writes tensors (any device; copied to CPU, contiguous) in name order, atomically.
Status write_safetensors(const std::string& path, const TensorMap& tensors,
                         const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace grpo
