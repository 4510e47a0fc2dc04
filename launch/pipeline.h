#pragma once
// `grpo pipeline`: a YAML list of stages (sft, train, eval, sample, convert), each run as a
// subprocess of the same binary, each taking inputs from earlier stages' outputs by name
// (`${stage.output}`). This part reads and checks the file and builds each stage's command line;
// launch/pipeline_command.cpp runs them.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace grpo {

struct PipelineStageConfig {
  std::string name;    // unique; the stage's directory is <run_dir>/<name>
  std::string verb;    // sft, train, eval, sample, convert
  std::string config;  // the verb's config file, relative to the pipeline file's directory
  int64_t ranks = 0;   // MPI ranks; 0 = the pipeline's `ranks`
  nlohmann::json set = nlohmann::json::object();  // key.path -> value overrides; strings may hold ${stage.output}
  std::vector<std::string> args;                  // extra command-line arguments (convert: --checkpoint DIR)
};

struct PipelineConfig {
  std::string run_dir = "runs/pipeline";  // stage directories, summary.json
  int64_t ranks = 1;                      // default MPI ranks per stage (1 = no launcher)
  std::vector<std::string> launcher = {"mpirun", "--oversubscribe"};  // run with `-np N` for N > 1 ranks
  std::vector<PipelineStageConfig> stages;
};

// `${stage.output}` inside a string.
struct StageReference {
  std::string stage;
  std::string output;
};

struct PlannedStage {
  size_t index = 0;  // position in the file's `stages`
  PipelineStageConfig config;
  std::string config_path;              // resolved against the pipeline file's directory; "" for convert
  std::string dir;                      // <run_dir>/<name>
  int64_t ranks = 1;
  std::vector<std::string> inputs;      // names of the stages it refers to
};

struct Pipeline {
  std::string source;  // the pipeline file
  PipelineConfig config;
  std::vector<PlannedStage> order;  // file order, except that a stage runs after the stages it refers to
};

// Outputs of finished stages: stage name -> output name -> path.
using StageOutputs = std::map<std::string, std::map<std::string, std::string>>;

// The outputs a verb's COMPLETE record names (what `${stage.NAME}` may refer to).
const std::vector<std::string>& verb_outputs(const std::string& verb);

// Reads and checks the whole pipeline before anything runs: keys and types, stage names, verbs,
// references (unknown stage or output, cycles), each stage's config file and overrides (parsed
// with the references stood in for). Errors name the file, line and key, one line each.
StatusOr<Pipeline> parse_pipeline(const std::string& yaml_text, const std::string& source_name,
                                  const std::vector<std::string>& overrides = {});
StatusOr<Pipeline> load_pipeline(const std::string& path, const std::vector<std::string>& overrides = {});

// The references in `text`, or an error for a malformed one.
StatusOr<std::vector<StageReference>> find_stage_references(const std::string& text);

// `text` with each reference replaced by the named output from `outputs`.
StatusOr<std::string> substitute_stage_references(const std::string& text, const StageOutputs& outputs);

// The stage's command line: [launcher -np N] binary verb --config FILE key=value... [--resume auto].
StatusOr<std::vector<std::string>> stage_command(const Pipeline& pipeline, const PlannedStage& stage,
                                                 const StageOutputs& outputs, const std::string& binary);

}  // namespace grpo
