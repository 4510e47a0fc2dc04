#pragma once
// A CPU allocator that records every tensor allocation passing through it: the bytes held now, the
// most held at once since the last reset, and the largest single allocation since then. Installed
// with c10::SetCPUAllocator by the multi-rank memory tests (tests/mpi/sharded_memory_test.cpp,
// tests/mpi/weight_sync_test.cpp).

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cstdint>

namespace grpo::testing {

class TrackingAllocator final : public c10::Allocator {
 public:
  explicit TrackingAllocator(c10::Allocator* base) : base_(base) {}

  c10::DataPtr allocate(size_t n) const override {
    c10::DataPtr inner = base_->allocate(n);
    void* data = inner.get();
    auto* record = new Record{std::move(inner), static_cast<int64_t>(n), this};
    const int64_t now = live_ += record->bytes;
    raise(peak_, now);
    raise(largest_, record->bytes);
    return {data, record, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return nullptr; }

  void reset() {
    baseline_ = live_.load();
    peak_ = baseline_;
    largest_ = 0;
  }
  int64_t peak_above_baseline() const { return peak_.load() - baseline_; }
  int64_t largest() const { return largest_.load(); }

 private:
  struct Record {
    c10::DataPtr inner;
    int64_t bytes;
    const TrackingAllocator* owner;
  };
  static void release(void* context) {
    auto* record = static_cast<Record*>(context);
    record->owner->live_ -= record->bytes;
    delete record;
  }
  static void raise(std::atomic<int64_t>& value, int64_t candidate) {
    int64_t seen = value.load();
    while (candidate > seen && !value.compare_exchange_weak(seen, candidate)) {
    }
  }

  c10::Allocator* base_;
  mutable std::atomic<int64_t> live_{0}, peak_{0}, largest_{0};
  int64_t baseline_ = 0;
};

}  // namespace grpo::testing
