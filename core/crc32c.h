#pragma once
// CRC-32C (Castagnoli), the checksum of TensorBoard event records and of checkpoint manifests.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace grpo {

uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);
inline uint32_t crc32c(std::string_view bytes) { return crc32c(bytes.data(), bytes.size()); }
// TensorFlow's masked form, stored in record framing.
inline uint32_t masked_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

}  // namespace grpo
