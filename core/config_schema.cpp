#include "core/config_schema.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "core/string_distance.h"

namespace grpo {

// ---------------------------------------------------------------------------------------------
// FieldSpec and enum names

bool FieldSpec::in_range(double value) const {
  if (std::isnan(value)) return false;
  if (min && (min_exclusive ? !(value > *min) : !(value >= *min))) return false;
  if (max && (max_exclusive ? !(value < *max) : !(value <= *max))) return false;
  return true;
}

std::string FieldSpec::range_text() const {
  std::vector<std::string> parts;
  if (min) parts.push_back(fmt::format("{} {}", min_exclusive ? ">" : ">=", *min));
  if (max) parts.push_back(fmt::format("{} {}", max_exclusive ? "<" : "<=", *max));
  if (parts.empty()) return "";
  return fmt::format("{}", fmt::join(parts, " and "));
}

std::string enum_name(int value, const EnumNames& names) {
  for (const auto& [v, name] : names)
    if (v == value) return name;
  return "?";
}

namespace {

std::vector<std::string> canonical_names(const EnumNames& names) {
  std::vector<std::string> result;
  std::set<int> seen;
  for (const auto& [v, name] : names)
    if (seen.insert(v).second) result.push_back(name);
  return result;
}

std::string join_path(const std::string& prefix, std::string_view name) {
  return prefix.empty() ? std::string(name) : fmt::format("{}.{}", prefix, name);
}

// A scalar as text, or a word for what the node is instead.
std::string describe_node(const YAML::Node& node) {
  if (node.IsNull()) return "null";
  if (node.IsScalar()) return fmt::format("'{}'", node.Scalar());
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

bool parse_int64(const std::string& text, int64_t& out) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  out = value;
  return true;
}

std::string with_range(std::string_view expected, const FieldSpec& spec) {
  const std::string range = spec.range_text();
  return range.empty() ? std::string(expected) : fmt::format("{} {}", expected, range);
}

// A YAML subtree as JSON: scalars become null, booleans, integers, numbers or strings.
nlohmann::json yaml_to_json(const YAML::Node& node) {
  if (node.IsMap()) {
    nlohmann::json object = nlohmann::json::object();
    for (const auto& entry : node) object[entry.first.Scalar()] = yaml_to_json(entry.second);
    return object;
  }
  if (node.IsSequence()) {
    nlohmann::json array = nlohmann::json::array();
    for (const auto& item : node) array.push_back(yaml_to_json(item));
    return array;
  }
  if (node.IsNull()) return nullptr;
  const std::string& text = node.Scalar();
  if (node.Tag() == "!") return text;  // quoted: always a string
  bool b = false;
  if (YAML::convert<bool>::decode(node, b)) return b;
  int64_t i = 0;
  if (parse_int64(text, i)) return i;
  double d = 0;
  if (YAML::convert<double>::decode(node, d)) return d;
  return text;
}

bool parse_double(const YAML::Node& node, double& out) {
  if (!node.IsScalar()) return false;
  return YAML::convert<double>::decode(node, out);
}

// ---------------------------------------------------------------------------------------------
// Reading

struct ReadContext {
  std::string source_name;
  std::map<std::string, std::string> overrides;  // key path -> the override as typed
  std::vector<std::pair<int, std::string>> errors;  // (line for ordering, message)

  // "file.yaml:12" or "override 'a.b=c'", for the node found at `path`.
  std::pair<int, std::string> where(const std::string& path, const YAML::Node& node) const {
    for (std::string prefix = path;;) {
      if (auto it = overrides.find(prefix); it != overrides.end())
        return {0, fmt::format("command-line override '{}'", it->second)};
      const auto dot = prefix.rfind('.');
      if (dot == std::string::npos) break;
      prefix.resize(dot);
    }
    const YAML::Mark mark = node.Mark();
    if (mark.line < 0) return {0, source_name};
    return {mark.line + 1, fmt::format("{}:{}", source_name, mark.line + 1)};
  }

  void error(const std::string& path, const YAML::Node& node, const std::string& what) {
    auto [line, location] = where(path, node);
    errors.emplace_back(line, fmt::format("{}: {}: {}", location, path, what));
  }
};

class YamlReader final : public ConfigVisitor {
 public:
  YamlReader(ReadContext& context, YAML::Node map, std::string prefix)
      : context_(context), map_(std::move(map)), prefix_(std::move(prefix)) {}

  void visit(const FieldSpec& spec, bool& value) override {
    read(spec, [&](const YAML::Node& node) -> std::string {
      bool parsed = false;
      if (!node.IsScalar() || !YAML::convert<bool>::decode(node, parsed)) return "expected true or false";
      value = parsed;
      return "";
    });
  }

  void visit(const FieldSpec& spec, int64_t& value) override {
    read(spec, [&](const YAML::Node& node) -> std::string {
      int64_t parsed = 0;
      const std::string expected = with_range("expected an integer", spec);
      if (!node.IsScalar() || !parse_int64(node.Scalar(), parsed)) return expected;
      if (!spec.in_range(static_cast<double>(parsed))) return expected;
      value = parsed;
      return "";
    });
  }

  void visit(const FieldSpec& spec, double& value) override {
    read(spec, [&](const YAML::Node& node) -> std::string {
      double parsed = 0;
      const std::string expected = with_range("expected a number", spec);
      if (!parse_double(node, parsed) || !spec.in_range(parsed)) return expected;
      value = parsed;
      return "";
    });
  }

  void visit(const FieldSpec& spec, std::optional<double>& value) override {
    read(spec, [&](const YAML::Node& node) -> std::string {
      if (node.IsNull()) {
        value.reset();
        return "";
      }
      double parsed = 0;
      const std::string expected = with_range("expected null or a number", spec);
      if (!parse_double(node, parsed) || !spec.in_range(parsed)) return expected;
      value = parsed;
      return "";
    });
  }

  void visit(const FieldSpec& spec, std::string& value) override {
    read(spec, [&](const YAML::Node& node) -> std::string {
      if (!node.IsScalar()) return "expected a string";
      value = node.Scalar();
      return "";
    });
  }

  void visit(const FieldSpec& spec, std::vector<std::string>& value) override {
    read(spec, [&](const YAML::Node& node) -> std::string {
      if (node.IsNull()) {
        value.clear();
        return "";
      }
      if (!node.IsSequence()) return "expected a list of strings";
      std::vector<std::string> parsed;
      for (const auto& item : node) {
        if (!item.IsScalar()) return "expected a list of strings";
        // Every list of strings here holds stop strings or labels: an empty one matches everywhere
        // (beside another stop string it ended every completion after one token) or names nothing.
        if (item.Scalar().empty())
          return fmt::format("expected a list of non-empty strings (item {} is empty)", parsed.size() + 1);
        parsed.push_back(item.Scalar());
      }
      value = std::move(parsed);
      return "";
    });
  }

  void visit_enum(const FieldSpec& spec, int& value, const EnumNames& names) override {
    read(spec, [&](const YAML::Node& node) -> std::string {
      const std::vector<std::string> valid = canonical_names(names);
      const std::string expected = fmt::format("expected one of {}", fmt::join(valid, ", "));
      if (!node.IsScalar()) return expected;
      for (const auto& [v, name] : names) {
        if (name == node.Scalar()) {
          value = v;
          return "";
        }
      }
      std::vector<std::string> all;
      for (const auto& entry : names) all.push_back(entry.second);
      const std::string near = closest_name(node.Scalar(), all);
      return near.empty() ? expected : fmt::format("{} (did you mean '{}'?)", expected, near);
    });
  }

  void visit(const FieldSpec& spec, nlohmann::json& value) override {
    read(spec, [&](const YAML::Node& node) -> std::string {
      if (!node.IsMap() && !node.IsNull()) return "expected a mapping";
      value = node.IsNull() ? nlohmann::json::object() : yaml_to_json(node);
      return "";
    });
  }

  void list(const FieldSpec& spec, size_t, const std::function<void(size_t)>& resize,
            const std::function<void(ConfigVisitor&, size_t)>& item) override {
    known_.emplace_back(spec.name);
    last_assigned_ = false;
    const std::string path = join_path(prefix_, spec.name);
    const YAML::Node node = lookup(spec.name);
    if (!node || node.IsNull()) return;
    if (!node.IsSequence()) {
      context_.error(path, node, fmt::format("expected a list, got {}", describe_node(node)));
      return;
    }
    resize(node.size());
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string item_path = fmt::format("{}[{}]", path, i);
      if (!node[i].IsMap()) {
        context_.error(item_path, node[i], fmt::format("expected a mapping, got {}", describe_node(node[i])));
        continue;
      }
      YamlReader reader(context_, node[i], item_path);
      item(reader, i);
      reader.report_unknown_keys();
    }
    last_assigned_ = true;
  }

  void section(std::string_view name, std::string_view doc, const DescribeFn& describe_fields) override {
    known_.emplace_back(name);
    last_assigned_ = false;
    const std::string path = join_path(prefix_, name);
    YAML::Node child = lookup(name);
    if (child && !child.IsNull() && !child.IsMap()) {
      context_.error(path, child, fmt::format("expected a mapping of {} keys, got {}", path, describe_node(child)));
      return;
    }
    YamlReader reader(context_, child && child.IsMap() ? child : YAML::Node(), path);
    describe_fields(reader);
    reader.report_unknown_keys();
  }

  bool assigned_last_field() const override { return last_assigned_; }

  void report_unknown_keys() {
    if (!map_ || !map_.IsMap()) return;
    std::map<std::string, int> first_line;
    for (const auto& entry : map_) {
      const std::string key = entry.first.Scalar();
      // YAML parsers keep one of two equal keys silently; a config must not lose a setting.
      const auto [it, inserted] = first_line.emplace(key, entry.first.Mark().line + 1);
      if (!inserted) {
        context_.error(join_path(prefix_, key), entry.first,
                       fmt::format("duplicate key (first written at line {})", it->second));
        continue;
      }
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      const std::string near = closest_name(key, known_);
      const std::string path = join_path(prefix_, key);
      context_.error(path, entry.first,
                     near.empty() ? fmt::format("unknown key (valid keys here: {})", fmt::join(known_, ", "))
                                  : fmt::format("unknown key; did you mean '{}'?", join_path(prefix_, near)));
    }
  }

 private:
  YAML::Node lookup(std::string_view name) const {
    if (!map_ || !map_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& constant = map_;  // const lookup: never inserts the key
    return constant[std::string(name)];
  }

  template <class Parse>
  void read(const FieldSpec& spec, Parse&& parse) {
    known_.emplace_back(spec.name);
    last_assigned_ = false;
    const std::string path = join_path(prefix_, spec.name);
    const YAML::Node node = lookup(spec.name);
    const bool missing = !node || (node.IsNull() && spec.required);
    if (missing) {
      if (spec.required) {
        const YAML::Node anchor = map_ ? map_ : YAML::Node();
        context_.error(path, anchor, fmt::format("missing required key ({})", spec.doc));
      }
      return;
    }
    const std::string problem = parse(node);
    if (!problem.empty()) {
      context_.error(path, node, fmt::format("{}, got {}", problem, describe_node(node)));
      return;
    }
    last_assigned_ = true;
  }

  ReadContext& context_;
  YAML::Node map_;
  std::string prefix_;
  std::vector<std::string> known_;
  bool last_assigned_ = false;
};

// Puts `value` at the dotted `path` in `root`, creating mappings on the way.
std::string apply_override(YAML::Node& root, const std::string& path, const std::string& value_text) {
  YAML::Node value;
  try {
    value = value_text.empty() ? YAML::Node(YAML::NodeType::Null) : YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    return fmt::format("value is not valid YAML: {}", e.msg);
  }
  std::vector<std::string> parts;
  std::stringstream stream(path);
  for (std::string part; std::getline(stream, part, '.');) {
    if (part.empty()) return "empty key segment";
    parts.push_back(part);
  }
  if (parts.empty()) return "empty key";
  YAML::Node current = root;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (!current[parts[i]].IsDefined() || current[parts[i]].IsNull())
      current[parts[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = current[parts[i]];
    if (!next.IsMap()) return fmt::format("'{}' is not a mapping", parts[i]);
    current.reset(next);
  }
  current[parts.back()] = value;
  return "";
}

// ---------------------------------------------------------------------------------------------
// Writing YAML

std::string format_double(double value) {
  if (std::isinf(value)) return value > 0 ? ".inf" : "-.inf";
  if (std::isnan(value)) return ".nan";
  std::string text = fmt::format("{}", value);  // shortest text that reads back to the same double
  if (text.find_first_of(".eEn") == std::string::npos) text += ".0";
  return text;
}

std::string quote(const std::string& text) { return nlohmann::json(text).dump(); }

class YamlWriter final : public ConfigVisitor {
 public:
  explicit YamlWriter(int indent) : indent_(indent) {}

  void visit(const FieldSpec& spec, bool& value) override { line(spec.name, value ? "true" : "false"); }
  void visit(const FieldSpec& spec, int64_t& value) override { line(spec.name, std::to_string(value)); }
  void visit(const FieldSpec& spec, double& value) override { line(spec.name, format_double(value)); }
  void visit(const FieldSpec& spec, std::optional<double>& value) override {
    line(spec.name, value ? format_double(*value) : "null");
  }
  void visit(const FieldSpec& spec, std::string& value) override { line(spec.name, quote(value)); }
  void visit(const FieldSpec& spec, std::vector<std::string>& value) override {
    std::vector<std::string> quoted;
    for (const auto& item : value) quoted.push_back(quote(item));
    line(spec.name, fmt::format("[{}]", fmt::join(quoted, ", ")));
  }
  void visit_enum(const FieldSpec& spec, int& value, const EnumNames& names) override {
    line(spec.name, enum_name(value, names));
  }
  void visit(const FieldSpec& spec, nlohmann::json& value) override { line(spec.name, value.dump()); }
  void list(const FieldSpec& spec, size_t count, const std::function<void(size_t)>&,
            const std::function<void(ConfigVisitor&, size_t)>& item) override {
    if (count == 0) {
      line(spec.name, "[]");
      return;
    }
    out_ << std::string(indent_, ' ') << spec.name << ":\n";
    for (size_t i = 0; i < count; ++i) {
      YamlWriter child(indent_ + 4);
      item(child, i);
      std::string text = child.text();
      text.replace(static_cast<size_t>(indent_), 2, "- ");  // "    key" -> "  - key"
      out_ << text;
    }
  }
  void section(std::string_view name, std::string_view, const DescribeFn& describe_fields) override {
    out_ << std::string(indent_, ' ') << name << ":\n";
    YamlWriter child(indent_ + 2);
    describe_fields(child);
    out_ << child.text();
  }

  std::string text() const { return out_.str(); }

 private:
  void line(std::string_view name, const std::string& value) {
    out_ << std::string(indent_, ' ') << name << ": " << value << "\n";
  }
  int indent_;
  std::ostringstream out_;
};

// ---------------------------------------------------------------------------------------------
// Writing the Markdown reference

class MarkdownWriter final : public ConfigVisitor {
 public:
  explicit MarkdownWriter(std::string prefix) : prefix_(std::move(prefix)) {}

  void visit(const FieldSpec& spec, bool& value) override { row(spec, "bool", value ? "true" : "false"); }
  void visit(const FieldSpec& spec, int64_t& value) override { row(spec, "integer", std::to_string(value)); }
  void visit(const FieldSpec& spec, double& value) override { row(spec, "number", format_double(value)); }
  void visit(const FieldSpec& spec, std::optional<double>& value) override {
    row(spec, "number or null", value ? format_double(*value) : "null");
  }
  void visit(const FieldSpec& spec, std::string& value) override { row(spec, "string", quote(value)); }
  void visit(const FieldSpec& spec, std::vector<std::string>& value) override {
    row(spec, "list of strings", value.empty() ? "[]" : fmt::format("{} items", value.size()));
  }
  void visit_enum(const FieldSpec& spec, int& value, const EnumNames& names) override {
    std::vector<std::string> shown;
    for (const auto& [v, name] : names) shown.push_back("`" + name + "`");
    row(spec, "one of " + fmt::format("{}", fmt::join(shown, ", ")), enum_name(value, names));
  }
  void visit(const FieldSpec& spec, nlohmann::json& value) override { row(spec, "mapping", value.dump()); }
  void list(const FieldSpec& spec, size_t, const std::function<void(size_t)>& resize,
            const std::function<void(ConfigVisitor&, size_t)>& item) override {
    row(spec, "list", "[]");
    resize(1);  // document the fields of one default item
    MarkdownWriter child(join_path(prefix_, spec.name) + "[]");
    item(child, 0);
    resize(0);
    rows_ << child.rows_.str();
  }
  void section(std::string_view name, std::string_view doc, const DescribeFn& describe_fields) override {
    const std::string path = join_path(prefix_, name);
    MarkdownWriter child(path);
    describe_fields(child);
    sections_ << "\n## `" << path << "`\n\n" << doc << "\n";
    if (child.has_rows()) {
      sections_ << "\n| key | type | default | meaning |\n|---|---|---|---|\n" << child.rows_.str();
    }
    sections_ << child.sections_.str();
  }

  bool has_rows() const { return !rows_.str().empty(); }
  std::string text() const { return rows_.str() + sections_.str(); }

 private:
  void row(const FieldSpec& spec, const std::string& type, const std::string& default_value) {
    std::string meaning(spec.doc);
    if (const std::string range = spec.range_text(); !range.empty()) meaning += fmt::format(" Must be {}.", range);
    const std::string shown_default = spec.required ? "required" : "`" + default_value + "`";
    rows_ << "| `" << join_path(prefix_, spec.name) << "` | " << type << " | " << shown_default << " | " << meaning
          << " |\n";
  }
  std::string prefix_;
  std::ostringstream rows_;
  std::ostringstream sections_;
};

}  // namespace

YamlReadResult read_yaml_config(const std::string& yaml_text, const std::string& source_name,
                                const std::vector<std::string>& overrides, const DescribeFn& describe) {
  ReadContext context;
  context.source_name = source_name;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    return {{fmt::format("{}:{}: invalid YAML: {}", source_name, e.mark.line + 1, e.msg)}};
  }
  if (root.IsNull() || !root.IsDefined()) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) return {{fmt::format("{}: expected a mapping of sections at the top level", source_name)}};

  for (const std::string& override_text : overrides) {
    const auto equals = override_text.find('=');
    const std::string path = override_text.substr(0, equals);
    if (equals == std::string::npos || path.empty()) {
      context.errors.emplace_back(0, fmt::format("command-line override '{}': expected key.path=value", override_text));
      continue;
    }
    const std::string problem = apply_override(root, path, override_text.substr(equals + 1));
    if (!problem.empty()) {
      context.errors.emplace_back(0, fmt::format("command-line override '{}': {}", override_text, problem));
      continue;
    }
    context.overrides[path] = override_text;
  }

  YamlReader reader(context, root, "");
  describe(reader);
  reader.report_unknown_keys();

  std::stable_sort(context.errors.begin(), context.errors.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  YamlReadResult result;
  for (auto& entry : context.errors) result.errors.push_back(std::move(entry.second));
  return result;
}

std::string write_yaml_config(const DescribeFn& describe) {
  YamlWriter writer(0);
  describe(writer);
  return writer.text();
}

std::string write_markdown_reference(const DescribeFn& describe) {
  MarkdownWriter writer("");
  describe(writer);
  return writer.text();
}

}  // namespace grpo
