#pragma once
// How the process's heap treats freed memory. LibTorch on CPU allocates and frees many
// medium-sized buffers per step; with glibc's defaults each is an mmap/munmap pair whose pages
// fault in afresh every time. Keeping freed memory in the heap made a GRPO step of the CPU demo
// 1.9x faster (docs/performance.md, "CPU set-up"). `grpo` calls this first thing in main, and so
// does every benchmark, so that they measure what users run.

namespace grpo {

void keep_freed_memory_in_heap();

}  // namespace grpo
