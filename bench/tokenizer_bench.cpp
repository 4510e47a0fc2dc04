// Tokenizer encode throughput (MB/s, one thread) on a corpus of JSON lines (every string in
// them is encoded). bench/tokenizer_vs_hf.sh runs it beside Hugging Face tokenizers (Rust, via
// its npm binding) on the same corpus and prints the ratio.
//
// Usage: bench_tokenizer TOKENIZER_DIR [corpus.jsonl ...]   (default: GSM8K, MATH-500, HumanEval)

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "core/cpu_info.h"
#include "core/jsonl.h"
#include "models/tokenizer.h"

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

void collect_strings(const nlohmann::json& value, std::vector<std::string>& out) {
  if (value.is_string()) out.push_back(value.get<std::string>());
  if (value.is_object() || value.is_array())
    for (const auto& item : value) collect_strings(item, out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_tokenizer TOKENIZER_DIR [corpus.jsonl ...]\n");
    return 2;
  }
  auto tokenizer = grpo::Tokenizer::load(argv[1]);
  if (!tokenizer) {
    std::fprintf(stderr, "%s\n", tokenizer.status().message().c_str());
    return 1;
  }
  std::vector<std::string> files;
  for (int i = 2; i < argc; ++i) files.push_back(argv[i]);
  if (files.empty()) {
    const std::string data = std::string(GRPO_SHARED_DIR) + "/data/";
    files = {data + "gsm8k/test.jsonl", data + "math500/test.jsonl", data + "humaneval/HumanEval.jsonl"};
  }
  std::printf("compute: %s\n", grpo::compute_setup_line().c_str());
  std::vector<std::string> corpus;
  size_t bytes = 0;
  for (const auto& f : files) {
    auto records = grpo::read_jsonl(f);
    if (!records) {
      std::fprintf(stderr, "skipping %s: %s\n", f.c_str(), records.status().message().c_str());
      continue;
    }
    for (const auto& r : records->records) collect_strings(r, corpus);
  }
  for (const auto& s : corpus) bytes += s.size();
  std::printf("corpus: %zu strings, %.2f MB from %zu files\n", corpus.size(), bytes / 1e6, files.size());

  // Cold (empty BPE cache) then warm passes.
  size_t tokens = 0;
  double t0 = now();
  for (const auto& s : corpus) tokens += tokenizer->encode(s).size();
  const double cold = now() - t0;
  t0 = now();
  for (const auto& s : corpus) tokenizer->encode(s);
  const double warm = now() - t0;
  std::printf("encode, cold cache: %.2f MB/s (%.0f tokens/s, %zu tokens)\n", bytes / 1e6 / cold, tokens / cold, tokens);
  std::printf("encode, warm cache: %.2f MB/s\n", bytes / 1e6 / warm);
  return 0;
}
