#pragma once
// Datasets: JSONL files with a configurable field mapping (GSM8K and MATH work as they are), a
// built-in synthetic task for the demo and tests, and a seeded, resumable order over epochs.

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/status.h"

namespace grpo {

struct Example {
  std::string id;
  std::string prompt;    // the question as the chat template (or raw prompt) receives it
  std::string answer;    // the gold answer the rewards compare with
  std::string response;  // a worked solution, for SFT
  nlohmann::json fields; // every field of the record, for rewards
  std::string source;    // "file:line" of a JSONL record; "" for built-in sets
};

struct Dataset {
  std::vector<Example> examples;
  int64_t skipped_lines = 0;
};

// `source` is a JSONL path, or `builtin:addition?n=4000&digits=1-3&hard_digits=4-5&hard_fraction=0.1&seed=1`.
StatusOr<Dataset> load_dataset(const std::string& source, const DataConfig& mapping);

// Load-time checks of a training set against what the run will do with it, so that bad data stops
// the run before any model work instead of scoring 0 or running at a crawl later.
struct ExampleChecks {
  // The first field a configured reward needs and `fields` lacks, as {reward, field}; empty when none.
  std::function<std::pair<std::string, std::string>(const nlohmann::json& fields)> missing_field;
  // A prompt's length in tokens as the model will see it (chat template applied); unset: not checked.
  std::function<int64_t(const std::string& prompt)> prompt_tokens;
  int64_t context_length = 0;  // the model's max_position_embeddings
  int64_t max_new_tokens = 0;  // rollout.max_new_tokens
  OverlongPrompts overlong = OverlongPrompts::kError;
};

// Runs `checks` over every example. Overlong prompts are dropped when checks.overlong is skip, and
// their number returned; any other failure is an error naming the example's file:line and what it
// lacks (a field by its data.* name) or its lengths.
StatusOr<int64_t> check_examples(Dataset& dataset, const ExampleChecks& checks, const DataConfig& mapping);

// Column-addition problems with a worked solution in the R1 format, e.g. prompt "25315+2485=",
// response "<think>5+5+0=10,1+8+1=10,3+4+1=8,5+2+0=7,2+0+0=2</think><answer>27800</answer>".
std::vector<Example> make_addition_examples(int64_t count, int64_t min_digits, int64_t max_digits, uint64_t seed,
                                            int64_t hard_min_digits = 0, int64_t hard_max_digits = 0,
                                            double hard_fraction = 0.0);

// A seeded order over a dataset of `size` items, reshuffled each epoch; the cursor (epoch and
// position) is all the state a checkpoint needs.
class DataOrder {
 public:
  DataOrder(int64_t size, uint64_t seed, bool shuffle);
  // The next `count` item indices, crossing into the next epoch when needed.
  std::vector<int64_t> next(int64_t count);
  nlohmann::json cursor() const { return {{"epoch", epoch_}, {"position", position_}}; }
  void restore(const nlohmann::json& cursor);
  int64_t epoch() const { return epoch_; }

 private:
  void build_epoch();
  int64_t size_;
  uint64_t seed_;
  bool shuffle_;
  int64_t epoch_ = 0, position_ = 0;
  std::vector<int64_t> order_;
};

}  // namespace grpo
