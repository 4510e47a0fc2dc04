#include "launch/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "core/atomic_file.h"
#include "core/config.h"
#include "core/config_schema.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

struct VerbSpec {
  std::string name;
  std::vector<std::string> outputs;
  bool takes_config = true;
  bool resumes = false;  // accepts --resume auto
};

const std::vector<VerbSpec>& verbs() {
  static const std::vector<VerbSpec> table = {
      {"sft", {"run_dir", "final"}, true, true},
      {"train", {"run_dir", "final"}, true, true},
      {"eval", {"run_dir", "output"}, true, false},
      {"sample", {"samples", "stats"}, true, false},  // resumes by itself from its parts
      {"convert", {"output"}, false, false},
  };
  return table;
}

const VerbSpec* find_verb(const std::string& name) {
  for (const VerbSpec& v : verbs())
    if (v.name == name) return &v;
  return nullptr;
}

void describe(ConfigVisitor& v, PipelineStageConfig& c) {
  v.visit(field("name", "Stage name: its directory under run_dir and how later stages refer to it.").is_required(),
          c.name);
  v.visit(field("verb", "sft, train, eval, sample or convert.").is_required(), c.verb);
  v.visit(field("config", "The verb's config file, relative to the pipeline file's directory (not for convert)."),
          c.config);
  v.visit(field("ranks", "MPI ranks for this stage; 0 = the pipeline's ranks.").at_least(0), c.ranks);
  v.visit(field("set", "Overrides key.path: value; a string may name an earlier stage's output as ${stage.output}."),
          c.set);
  v.visit(field("args", "Extra command-line arguments (convert: [--checkpoint, DIR])."), c.args);
}

void describe(ConfigVisitor& v, PipelineConfig& c) {
  v.visit(field("run_dir", "Directory of the stage directories and summary.json."), c.run_dir);
  v.visit(field("ranks", "MPI ranks per stage unless the stage says otherwise; 1 runs without a launcher.").at_least(1),
          c.ranks);
  v.visit(field("launcher", "The MPI launcher and its options; `-np N` is appended (and --allow-run-as-root as root)."),
          c.launcher);
  v.visit_list(field("stages", "The stages, in the order they run (a stage always runs after those it refers to)."),
               c.stages, [](ConfigVisitor& item, PipelineStageConfig& s) { describe(item, s); });
}

// "file:line" of stages[i] (or of its key `key`, or of set[set_key]) for error messages.
class Locator {
 public:
  Locator(const std::string& yaml_text, std::string source) : source_(std::move(source)) {
    try {
      root_ = YAML::Load(yaml_text);
    } catch (const YAML::Exception&) {
    }
  }
  std::string at(size_t stage, const std::string& key = "", const std::string& set_key = "") const {
    YAML::Node node;
    if (root_.IsMap() && root_["stages"] && root_["stages"].IsSequence() && stage < root_["stages"].size())
      node = root_["stages"][stage];
    if (node.IsMap() && !key.empty() && node[key]) node = node[key];
    if (node.IsMap() && !set_key.empty() && node[set_key]) node = node[set_key];
    if (!node.IsDefined() || node.Mark().line < 0) return source_;
    return fmt::format("{}:{}", source_, node.Mark().line + 1);
  }

 private:
  std::string source_;
  YAML::Node root_;
};

std::string quote_value(const nlohmann::json& value) {
  return value.is_string() ? nlohmann::json(value.get<std::string>()).dump() : value.dump();
}

// Every string in the stage that may hold references, with the key path it sits at.
std::vector<std::pair<std::string, std::string>> reference_sites(const PipelineStageConfig& stage) {
  std::vector<std::pair<std::string, std::string>> sites;
  for (const auto& [key, value] : stage.set.items()) {
    if (value.is_string()) sites.emplace_back("set." + key, value.get<std::string>());
    else sites.emplace_back("set." + key, value.dump());  // a list or mapping: references inside it too
  }
  for (size_t i = 0; i < stage.args.size(); ++i) sites.emplace_back(fmt::format("args[{}]", i), stage.args[i]);
  return sites;
}

// Stand-ins for references while a stage's config is checked before anything ran.
StageOutputs placeholder_outputs(const std::vector<PipelineStageConfig>& stages) {
  StageOutputs outputs;
  for (const PipelineStageConfig& s : stages)
    if (const VerbSpec* verb = find_verb(s.verb))
      for (const std::string& name : verb->outputs) outputs[s.name][name] = fmt::format("<{}.{}>", s.name, name);
  return outputs;
}

std::vector<std::string> stage_overrides(const PlannedStage& stage, const StageOutputs& outputs, Status* status) {
  std::vector<std::string> overrides = {"trainer.run_dir=" + nlohmann::json(stage.dir).dump()};
  for (const auto& [key, value] : stage.config.set.items()) {
    StatusOr<std::string> text = substitute_stage_references(quote_value(value), outputs);
    if (!text) {
      *status = Status::error(fmt::format("set.{}: {}", key, text.status().message()));
      return {};
    }
    overrides.push_back(key + "=" + *text);
  }
  return overrides;
}

// Orders the stages: file order, except that a stage waits for the stages it refers to.
// Returns the names of a cycle when there is one.
std::vector<size_t> run_order(const std::vector<PlannedStage>& stages, std::vector<std::string>* cycle) {
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < stages.size(); ++i) index[stages[i].config.name] = i;
  std::vector<size_t> order;
  std::vector<bool> placed(stages.size(), false);
  while (order.size() < stages.size()) {
    bool progressed = false;
    for (size_t i = 0; i < stages.size() && !progressed; ++i) {
      if (placed[i]) continue;
      const bool ready = std::all_of(stages[i].inputs.begin(), stages[i].inputs.end(),
                                     [&](const std::string& name) { return placed[index.at(name)]; });
      if (ready) {
        placed[i] = true;
        order.push_back(i);
        progressed = true;
      }
    }
    if (progressed) continue;
    // Every unplaced stage waits on another unplaced one: walk the waits until one repeats.
    size_t at = 0;
    while (placed[at]) ++at;
    std::vector<size_t> path;
    while (std::find(path.begin(), path.end(), at) == path.end()) {
      path.push_back(at);
      for (const std::string& name : stages[at].inputs)
        if (!placed[index.at(name)]) {
          at = index.at(name);
          break;
        }
    }
    for (auto it = std::find(path.begin(), path.end(), at); it != path.end(); ++it)
      cycle->push_back(stages[*it].config.name);
    cycle->push_back(stages[at].config.name);
    return {};
  }
  return order;
}

bool valid_stage_name(const std::string& name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-';
  });
}

}  // namespace

const std::vector<std::string>& verb_outputs(const std::string& verb) {
  static const std::vector<std::string> kNone;
  const VerbSpec* spec = find_verb(verb);
  return spec ? spec->outputs : kNone;
}

StatusOr<std::vector<StageReference>> find_stage_references(const std::string& text) {
  std::vector<StageReference> references;
  for (size_t at = text.find("${"); at != std::string::npos; at = text.find("${", at)) {
    const size_t end = text.find('}', at);
    if (end == std::string::npos) return Status::error(fmt::format("'{}': '${{' without a closing '}}'", text));
    const std::string inner = text.substr(at + 2, end - at - 2);
    const size_t dot = inner.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == inner.size())
      return Status::error(fmt::format("'{}': expected ${{stage.output}}, got '${{{}}}'", text, inner));
    references.push_back({inner.substr(0, dot), inner.substr(dot + 1)});
    at = end + 1;
  }
  return references;
}

StatusOr<std::string> substitute_stage_references(const std::string& text, const StageOutputs& outputs) {
  std::string result;
  size_t from = 0;
  for (size_t at = text.find("${"); at != std::string::npos; at = text.find("${", from)) {
    const size_t end = text.find('}', at);
    if (end == std::string::npos) return Status::error(fmt::format("'{}': '${{' without a closing '}}'", text));
    const std::string inner = text.substr(at + 2, end - at - 2);
    const size_t dot = inner.find('.');
    const std::string stage = inner.substr(0, dot);
    const std::string output = dot == std::string::npos ? "" : inner.substr(dot + 1);
    const auto s = outputs.find(stage);
    if (s == outputs.end()) return Status::error(fmt::format("'${{{}}}': stage '{}' has no outputs yet", inner, stage));
    const auto o = s->second.find(output);
    if (o == s->second.end()) {
      std::vector<std::string> names;
      for (const auto& [name, path] : s->second) names.push_back(name);
      return Status::error(fmt::format("'${{{}}}': stage '{}' has no output '{}' (it has: {})", inner, stage, output,
                                       fmt::join(names, ", ")));
    }
    result += text.substr(from, at - from) + o->second;
    from = end + 1;
  }
  return result + text.substr(from);
}

StatusOr<Pipeline> parse_pipeline(const std::string& yaml_text, const std::string& source_name,
                                  const std::vector<std::string>& overrides) {
  Pipeline pipeline;
  pipeline.source = source_name;
  const YamlReadResult read = read_yaml_config(yaml_text, source_name, overrides,
                                               [&](ConfigVisitor& v) { describe(v, pipeline.config); });
  if (!read.errors.empty()) return Status::error(fmt::format("{}", fmt::join(read.errors, "\n")));
  const PipelineConfig& config = pipeline.config;
  const Locator where(yaml_text, source_name);
  std::vector<std::string> errors;
  if (config.stages.empty()) errors.push_back(fmt::format("{}: stages: expected at least one stage", source_name));
  if (config.run_dir.empty()) errors.push_back(fmt::format("{}: run_dir: expected a directory", source_name));

  std::map<std::string, size_t> names;
  for (size_t i = 0; i < config.stages.size(); ++i) {
    const PipelineStageConfig& s = config.stages[i];
    if (!valid_stage_name(s.name))
      errors.push_back(fmt::format("{}: stages[{}].name: expected letters, digits, '_' or '-', got '{}'",
                                   where.at(i, "name"), i, s.name));
    else if (!names.emplace(s.name, i).second)
      errors.push_back(fmt::format("{}: stages[{}].name: '{}' is also the name of stages[{}]", where.at(i, "name"), i,
                                   s.name, names[s.name]));
    if (!find_verb(s.verb))
      errors.push_back(fmt::format("{}: stages[{}].verb: unknown verb '{}'; expected one of sft, train, eval, sample, convert",
                                   where.at(i, "verb"), i, s.verb));
  }
  if (!errors.empty()) return Status::error(fmt::format("{}", fmt::join(errors, "\n")));

  std::vector<std::string> stage_names;
  for (const PipelineStageConfig& s : config.stages) stage_names.push_back(s.name);
  const fs::path base = fs::path(source_name).parent_path();
  std::vector<PlannedStage> planned;
  for (size_t i = 0; i < config.stages.size(); ++i) {
    const PipelineStageConfig& s = config.stages[i];
    const VerbSpec& verb = *find_verb(s.verb);
    PlannedStage stage;
    stage.index = i;
    stage.config = s;
    stage.dir = (fs::path(config.run_dir) / s.name).string();
    stage.ranks = s.ranks > 0 ? s.ranks : config.ranks;
    for (const auto& [key, text] : reference_sites(s)) {
      const std::string set_key = key.rfind("set.", 0) == 0 ? key.substr(4) : "";
      const std::string line = set_key.empty() ? where.at(i, "args") : where.at(i, "set", set_key);
      StatusOr<std::vector<StageReference>> references = find_stage_references(text);
      if (!references) {
        errors.push_back(fmt::format("{}: stages[{}].{}: {}", line, i, key, references.status().message()));
        continue;
      }
      for (const StageReference& r : *references) {
        const auto target = names.find(r.stage);
        if (target == names.end()) {
          errors.push_back(fmt::format("{}: stages[{}].{}: '${{{}.{}}}' refers to stage '{}', which is not in the "
                                       "pipeline (stages: {})",
                                       line, i, key, r.stage, r.output, r.stage, fmt::join(stage_names, ", ")));
          continue;
        }
        const std::vector<std::string>& outputs = verb_outputs(config.stages[target->second].verb);
        if (std::find(outputs.begin(), outputs.end(), r.output) == outputs.end())
          errors.push_back(fmt::format("{}: stages[{}].{}: stage '{}' ({}) has no output '{}'; expected one of {}", line,
                                       i, key, r.stage, config.stages[target->second].verb, r.output,
                                       fmt::join(outputs, ", ")));
        if (std::find(stage.inputs.begin(), stage.inputs.end(), r.stage) == stage.inputs.end())
          stage.inputs.push_back(r.stage);
      }
    }
    if (verb.takes_config) {
      if (s.config.empty()) {
        errors.push_back(fmt::format("{}: stages[{}].config: a {} stage needs a config file", where.at(i), i, s.verb));
      } else {
        const fs::path path = fs::path(s.config).is_absolute() ? fs::path(s.config) : base / s.config;
        stage.config_path = path.lexically_normal().string();
        std::error_code ec;
        if (!fs::is_regular_file(path, ec))
          errors.push_back(fmt::format("{}: stages[{}].config: no such file '{}'", where.at(i, "config"), i,
                                       stage.config_path));
      }
      if (s.set.contains("trainer.run_dir"))
        errors.push_back(fmt::format("{}: stages[{}].set.trainer.run_dir: the pipeline sets it to '{}'",
                                     where.at(i, "set", "trainer.run_dir"), i, stage.dir));
    } else {
      if (!s.config.empty())
        errors.push_back(fmt::format("{}: stages[{}].config: {} takes no config file (give it args)",
                                     where.at(i, "config"), i, s.verb));
      if (!s.set.empty())
        errors.push_back(fmt::format("{}: stages[{}].set: {} takes no overrides (give it args)", where.at(i, "set"), i,
                                     s.verb));
      if (std::find(s.args.begin(), s.args.end(), "--output") != s.args.end())
        errors.push_back(fmt::format("{}: stages[{}].args: the pipeline sets --output to '{}'", where.at(i, "args"), i,
                                     stage.dir));
    }
    planned.push_back(std::move(stage));
  }
  if (!errors.empty()) return Status::error(fmt::format("{}", fmt::join(errors, "\n")));

  std::vector<std::string> cycle;
  const std::vector<size_t> order = run_order(planned, &cycle);
  if (!cycle.empty())
    return Status::error(fmt::format("{}: stages: {} refer to each other in a cycle ({}); a stage can only use the "
                                     "outputs of stages that finish before it",
                                     source_name, cycle.size() == 2 ? "a stage and itself" : "stages",
                                     fmt::join(cycle, " -> ")));
  for (size_t i : order) pipeline.order.push_back(planned[i]);

  // Each stage's config with its overrides, references stood in for: a typo in a key fails now,
  // not after the stages before it have run for an hour.
  const StageOutputs placeholders = placeholder_outputs(config.stages);
  for (const PlannedStage& stage : pipeline.order) {
    if (stage.config_path.empty()) continue;
    Status status;
    const std::vector<std::string> overrides = stage_overrides(stage, placeholders, &status);
    if (!status.is_ok()) {
      errors.push_back(fmt::format("{}: stages[{}] '{}': {}", where.at(stage.index), stage.index, stage.config.name,
                                   status.message()));
      continue;
    }
    StatusOr<Config> parsed = load_config(stage.config_path, overrides);
    if (!parsed)
      errors.push_back(fmt::format("{}: stages[{}] '{}': {}", where.at(stage.index, "set"), stage.index,
                                   stage.config.name, parsed.status().message()));
  }
  if (!errors.empty()) return Status::error(fmt::format("{}", fmt::join(errors, "\n")));
  return pipeline;
}

StatusOr<Pipeline> load_pipeline(const std::string& path, const std::vector<std::string>& overrides) {
  StatusOr<std::string> text = read_file(path);
  if (!text) return text.status();
  return parse_pipeline(*text, path, overrides);
}

StatusOr<std::vector<std::string>> stage_command(const Pipeline& pipeline, const PlannedStage& stage,
                                                 const StageOutputs& outputs, const std::string& binary) {
  const VerbSpec& verb = *find_verb(stage.config.verb);
  std::vector<std::string> command;
  if (stage.ranks > 1) {
    command = pipeline.config.launcher;
    command.insert(command.end(), {"-np", std::to_string(stage.ranks)});
    if (::geteuid() == 0) command.push_back("--allow-run-as-root");
  }
  command.insert(command.end(), {binary, verb.name});
  if (verb.takes_config) {
    command.insert(command.end(), {"--config", stage.config_path});
    Status status;
    const std::vector<std::string> overrides = stage_overrides(stage, outputs, &status);
    if (!status.is_ok()) return Status::error(fmt::format("stage '{}': {}", stage.config.name, status.message()));
    command.insert(command.end(), overrides.begin(), overrides.end());
  } else {
    command.insert(command.end(), {"--output", stage.dir});
  }
  for (size_t i = 0; i < stage.config.args.size(); ++i) {
    StatusOr<std::string> arg = substitute_stage_references(stage.config.args[i], outputs);
    if (!arg) return Status::error(fmt::format("stage '{}': args[{}]: {}", stage.config.name, i, arg.status().message()));
    command.push_back(*arg);
  }
  if (verb.resumes) command.insert(command.end(), {"--resume", "auto"});
  return command;
}

}  // namespace grpo
