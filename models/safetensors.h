#pragma once
// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON naming each
// tensor's dtype, shape and byte range, then the raw little-endian data.

#include <map>
#include <memory>
#include <vector>
#include <string>

#include <ATen/core/Tensor.h>

#include "core/status.h"

namespace grpo {

using TensorMap = std::map<std::string, at::Tensor>;

class AtomicFileWriter;

// Memory-maps one .safetensors file. The tensors are zero-copy views of the mapping (which stays
// alive as long as any of them does) and must not be written to. Every byte range is checked.
StatusOr<TensorMap> read_safetensors(const std::string& path);

// Reads a model directory: `model.safetensors`, or the shards that
// `model.safetensors.index.json` lists (each tensor from the file its weight_map names).
StatusOr<TensorMap> read_safetensors_dir(const std::string& dir);

// Writes tensors (any device; copied to CPU, contiguous) in name order, atomically.
Status write_safetensors(const std::string& path, const TensorMap& tensors,
                         const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes a safetensors file whose tensors arrive one at a time, so that no caller needs them all at
// once (a sharded model exported unit by unit): the header, computed from the declared names,
// dtypes and shapes, goes first, then each tensor's data in the declared order. Atomic: the file
// appears only on a commit() after every declared tensor was written.
class SafetensorsStreamWriter {
 public:
  struct Entry {
    std::string name;
    at::ScalarType dtype;
    std::vector<int64_t> shape;
  };
  SafetensorsStreamWriter(std::string path, std::vector<Entry> entries,
                          const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  ~SafetensorsStreamWriter();
  SafetensorsStreamWriter(const SafetensorsStreamWriter&) = delete;
  SafetensorsStreamWriter& operator=(const SafetensorsStreamWriter&) = delete;

  // The next declared tensor (converted to its declared dtype); an error names the tensor when it is
  // not the one expected or its shape differs.
  Status write(const std::string& name, const at::Tensor& tensor);
  Status commit();

 private:
  std::string path_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  Status status_;
  std::unique_ptr<AtomicFileWriter> writer_;
};

}  // namespace grpo
