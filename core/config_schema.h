#pragma once
// The machinery behind core/config: each config struct describes its fields once, to a
// ConfigVisitor, and the same description drives YAML reading (with file:line errors),
// YAML writing and the generated reference in docs/configuration.md.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace grpo {

// One field: its YAML key, its documentation and the values it accepts.
struct FieldSpec {
  std::string_view name;
  std::string_view doc;
  std::optional<double> min;
  std::optional<double> max;
  bool min_exclusive = false;
  bool max_exclusive = false;
  bool required = false;

  FieldSpec at_least(double bound) const { FieldSpec s = *this; s.min = bound; s.min_exclusive = false; return s; }
  FieldSpec above(double bound) const { FieldSpec s = *this; s.min = bound; s.min_exclusive = true; return s; }
  FieldSpec at_most(double bound) const { FieldSpec s = *this; s.max = bound; s.max_exclusive = false; return s; }
  FieldSpec below(double bound) const { FieldSpec s = *this; s.max = bound; s.max_exclusive = true; return s; }
  FieldSpec is_required() const { FieldSpec s = *this; s.required = true; return s; }

  bool in_range(double value) const;
  // "a number >= 0 and < 1"-style wording of the bounds, for errors and docs; "" if unbounded.
  std::string range_text() const;
};

inline FieldSpec field(std::string_view name, std::string_view doc) {
  FieldSpec spec;
  spec.name = name;
  spec.doc = doc;
  return spec;
}

// Names of an enum's values; the first name listed for a value is the canonical one,
// later ones are accepted aliases (e.g. verl's `low_var_kl` for k3).
using EnumNames = std::vector<std::pair<int, std::string>>;

class ConfigVisitor {
 public:
  virtual ~ConfigVisitor() = default;
  virtual void visit(const FieldSpec& spec, bool& value) = 0;
  virtual void visit(const FieldSpec& spec, int64_t& value) = 0;
  virtual void visit(const FieldSpec& spec, double& value) = 0;
  virtual void visit(const FieldSpec& spec, std::optional<double>& value) = 0;
  virtual void visit(const FieldSpec& spec, std::string& value) = 0;
  virtual void visit(const FieldSpec& spec, std::vector<std::string>& value) = 0;
  virtual void visit_enum(const FieldSpec& spec, int& value, const EnumNames& names) = 0;
  // A free-form mapping (e.g. a reward's options), checked by whoever consumes it.
  virtual void visit(const FieldSpec& spec, nlohmann::json& value) = 0;
  // A list of structs: `resize` sets the number of items, `item` describes item i's fields.
  virtual void list(const FieldSpec& spec, size_t count, const std::function<void(size_t)>& resize,
                    const std::function<void(ConfigVisitor&, size_t)>& item) = 0;
  virtual void section(std::string_view name, std::string_view doc,
                       const std::function<void(ConfigVisitor&)>& describe_fields) = 0;
  // True when the field visited last was just assigned from input (only readers assign);
  // lets a preset field reset its section's defaults before the remaining keys are read.
  virtual bool assigned_last_field() const { return false; }

  template <class T, class Describe>
  void visit_list(const FieldSpec& spec, std::vector<T>& items, Describe describe) {
    list(
        spec, items.size(), [&](size_t n) { items.resize(n); },
        [&](ConfigVisitor& v, size_t i) { describe(v, items[i]); });
  }

  template <class Enum>
  void visit(const FieldSpec& spec, Enum& value, const EnumNames& names) {
    int raw = static_cast<int>(value);
    visit_enum(spec, raw, names);
    value = static_cast<Enum>(raw);
  }
};

using DescribeFn = std::function<void(ConfigVisitor&)>;

// Canonical name of `value` in `names`.
std::string enum_name(int value, const EnumNames& names);

// Reads a YAML document into whatever `describe` visits. Errors are collected, one line each.
// `overrides` (key.path=value) are applied on top of the document first.
struct YamlReadResult {
  std::vector<std::string> errors;
};
YamlReadResult read_yaml_config(const std::string& yaml_text, const std::string& source_name,
                                const std::vector<std::string>& overrides, const DescribeFn& describe);

std::string write_yaml_config(const DescribeFn& describe);
std::string write_markdown_reference(const DescribeFn& describe);

}  // namespace grpo
