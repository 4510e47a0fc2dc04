#include "models/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"

namespace grpo {
namespace {

using nlohmann::json;

struct DTypeName {
  const char* name;
  at::ScalarType type;
};
constexpr DTypeName kDTypes[] = {
    {"F64", at::kDouble}, {"F32", at::kFloat},  {"F16", at::kHalf}, {"BF16", at::kBFloat16}, {"I64", at::kLong},
    {"I32", at::kInt},    {"I16", at::kShort},  {"I8", at::kChar},  {"U8", at::kByte},       {"BOOL", at::kBool},
};

std::optional<at::ScalarType> dtype_from_name(const std::string& name) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.type;
  return std::nullopt;
}

const char* dtype_name(at::ScalarType type) {
  for (const auto& d : kDTypes)
    if (type == d.type) return d.name;
  return nullptr;
}

// An mmapped file, unmapped when the last tensor that views it is freed.
struct Mapping {
  void* data = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (data != nullptr && data != MAP_FAILED) ::munmap(data, size);
  }
};

}  // namespace

StatusOr<TensorMap> read_safetensors(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::error(fmt::format("cannot open '{}': {}", path, std::strerror(errno)));
  struct stat info {};
  if (::fstat(fd, &info) != 0) {
    ::close(fd);
    return Status::error(fmt::format("cannot stat '{}': {}", path, std::strerror(errno)));
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->size = static_cast<size_t>(info.st_size);
  if (mapping->size < 8) {
    ::close(fd);
    return Status::error(fmt::format("{}: {} bytes is too short for a safetensors file", path, mapping->size));
  }
  mapping->data = ::mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (mapping->data == MAP_FAILED) return Status::error(fmt::format("cannot mmap '{}': {}", path, std::strerror(errno)));

  const auto* bytes = static_cast<const uint8_t*>(mapping->data);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > mapping->size - 8)
    return Status::error(fmt::format("{}: header length {} exceeds the file size {}", path, header_size, mapping->size));
  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(bytes + 8), reinterpret_cast<const char*>(bytes + 8 + header_size));
  } catch (const json::exception& e) {
    return Status::error(fmt::format("{}: invalid header JSON: {}", path, e.what()));
  }
  if (!header.is_object()) return Status::error(fmt::format("{}: header is not a JSON object", path));

  const size_t data_start = 8 + header_size;
  const size_t data_size = mapping->size - data_start;
  TensorMap tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    try {
      const std::string dtype = entry.at("dtype");
      const auto type = dtype_from_name(dtype);
      if (!type) return Status::error(fmt::format("{}: tensor '{}' has unsupported dtype {}", path, name, dtype));
      const std::vector<int64_t> shape = entry.at("shape");
      const std::vector<uint64_t> offsets = entry.at("data_offsets");
      if (offsets.size() != 2 || offsets[0] > offsets[1] || offsets[1] > data_size)
        return Status::error(fmt::format("{}: tensor '{}' has byte range outside the data", path, name));
      int64_t numel = 1;
      for (int64_t dim : shape) {
        if (dim < 0) return Status::error(fmt::format("{}: tensor '{}' has a negative dimension", path, name));
        numel *= dim;
      }
      const uint64_t expected = static_cast<uint64_t>(numel) * at::elementSize(*type);
      if (offsets[1] - offsets[0] != expected)
        return Status::error(fmt::format("{}: tensor '{}' holds {} bytes, its dtype and shape need {}", path, name,
                                         offsets[1] - offsets[0], expected));
      void* data = const_cast<uint8_t*>(bytes + data_start + offsets[0]);
      // Each tensor keeps the mapping alive; the mapping is private, so nothing writes the file.
      tensors[name] = at::from_blob(data, shape, [mapping](void*) {}, at::TensorOptions().dtype(*type));
    } catch (const json::exception& e) {
      return Status::error(fmt::format("{}: tensor '{}' has a malformed header entry: {}", path, name, e.what()));
    }
  }
  return tensors;
}

StatusOr<TensorMap> read_safetensors_dir(const std::string& dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (::access(index_path.c_str(), F_OK) != 0) return read_safetensors(dir + "/model.safetensors");

  StatusOr<std::string> text = read_file(index_path);
  if (!text) return text.status();
  json index;
  try {
    index = json::parse(*text);
  } catch (const json::exception& e) {
    return Status::error(fmt::format("{}: invalid JSON: {}", index_path, e.what()));
  }
  if (!index.contains("weight_map") || !index["weight_map"].is_object())
    return Status::error(fmt::format("{}: missing object 'weight_map'", index_path));
  std::map<std::string, TensorMap> shards;
  TensorMap tensors;
  for (const auto& [name, file] : index["weight_map"].items()) {
    const std::string shard = file.get<std::string>();
    if (!shards.count(shard)) {
      StatusOr<TensorMap> loaded = read_safetensors(dir + "/" + shard);
      if (!loaded) return loaded.status();
      shards[shard] = std::move(loaded).value();
    }
    const auto it = shards[shard].find(name);
    if (it == shards[shard].end())
      return Status::error(fmt::format("{}: tensor '{}' is listed in {} but not stored there", index_path, name, shard));
    tensors[name] = it->second;
  }
  return tensors;
}

namespace {

// The 8-byte length and the JSON header (padded to 8 bytes) for tensors laid out in `entries` order.
StatusOr<std::string> header_bytes(const std::string& path, const std::vector<SafetensorsStreamWriter::Entry>& entries,
                                   const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& e : entries) {
    const char* dtype = dtype_name(e.dtype);
    if (dtype == nullptr)
      return Status::error(fmt::format("{}: tensor '{}' has unsupported dtype {}", path, e.name, c10::toString(e.dtype)));
    uint64_t size = at::elementSize(e.dtype);
    for (int64_t d : e.shape) size *= static_cast<uint64_t>(d);
    header[e.name] = {{"dtype", dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(static_cast<uint64_t>(header_text.size()) >> (8 * i));
  return out + header_text;
}

}  // namespace

Status write_safetensors(const std::string& path, const TensorMap& tensors,
                         const std::map<std::string, std::string>& metadata) {
  std::vector<SafetensorsStreamWriter::Entry> entries;
  for (const auto& [name, tensor] : tensors) entries.push_back({name, tensor.scalar_type(), tensor.sizes().vec()});
  SafetensorsStreamWriter writer(path, entries, metadata);
  for (const auto& [name, tensor] : tensors)
    if (Status s = writer.write(name, tensor); !s.is_ok()) return s;
  return writer.commit();
}

SafetensorsStreamWriter::SafetensorsStreamWriter(std::string path, std::vector<Entry> entries,
                                                 const std::map<std::string, std::string>& metadata)
    : path_(std::move(path)), entries_(std::move(entries)), writer_(std::make_unique<AtomicFileWriter>(path_)) {
  StatusOr<std::string> header = header_bytes(path_, entries_, metadata);
  if (!header) {
    status_ = header.status();
    return;
  }
  writer_->write(header->data(), header->size());
}

SafetensorsStreamWriter::~SafetensorsStreamWriter() = default;

Status SafetensorsStreamWriter::write(const std::string& name, const at::Tensor& tensor) {
  if (!status_.is_ok()) return status_;
  if (next_ >= entries_.size() || entries_[next_].name != name)
    return status_ = Status::error(fmt::format("{}: tensor '{}' written out of the declared order (expected '{}')", path_,
                                               name, next_ < entries_.size() ? entries_[next_].name : "none"));
  const Entry& e = entries_[next_++];
  if (tensor.sizes() != at::IntArrayRef(e.shape))
    return status_ = Status::error(fmt::format("{}: tensor '{}' has shape {}, declared {}", path_, name,
                                               fmt::join(tensor.sizes(), "x"), fmt::join(e.shape, "x")));
  const at::Tensor cpu = tensor.detach().to(at::kCPU, e.dtype).contiguous();
  writer_->write(cpu.data_ptr(), static_cast<size_t>(cpu.numel()) * cpu.element_size());
  return Status::ok();
}

Status SafetensorsStreamWriter::commit() {
  if (!status_.is_ok()) return status_;
  if (next_ != entries_.size())
    return Status::error(fmt::format("{}: {} of {} declared tensors written", path_, next_, entries_.size()));
  return writer_->commit();
}

}  // namespace grpo
