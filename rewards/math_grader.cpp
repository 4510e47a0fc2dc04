#include "rewards/math_grader.h"

#include <algorithm>
#include <cctype>
#include <regex>
#include <vector>

#include "rewards/math_expression.h"

namespace grpo {
namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return;
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
}

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  const auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// Index of the brace that closes the one at `open`, or npos.
size_t matching_brace(const std::string& s, size_t open) {
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '{' || s[i + 1] == '}')) {
      ++i;
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return i;
  }
  return std::string::npos;
}

// Replaces \cmd{X} by X for each command in `commands` (text wrappers, \boxed).
void unwrap_commands(std::string& s, const std::vector<std::string>& commands, const std::string& before = "",
                     const std::string& after = "") {
  for (const std::string& cmd : commands) {
    const std::string head = "\\" + cmd + "{";
    for (size_t pos; (pos = s.find(head)) != std::string::npos;) {
      const size_t open = pos + head.size() - 1;
      const size_t close = matching_brace(s, open);
      if (close == std::string::npos) break;
      s = s.substr(0, pos) + before + s.substr(open + 1, close - open - 1) + after + s.substr(close + 1);
    }
  }
}

const std::vector<std::string> kTextCommands = {"text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mbox", "operatorname"};

bool is_text_wrapped(const std::string& s) {
  for (const std::string& cmd : kTextCommands) {
    const std::string head = "\\" + cmd + "{";
    if (s.rfind(head, 0) == 0 && matching_brace(s, head.size() - 1) == s.size() - 1) return true;
  }
  return false;
}

// Lower-case, no spaces, no text wrappers, "(A)" -> "a": the form text answers are compared in.
std::string text_form(std::string s) {
  unwrap_commands(s, kTextCommands);
  std::string out;
  for (char c : s)
    if (!std::isspace(static_cast<unsigned char>(c)) && c != '$') out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (out.size() == 3 && out[0] == '(' && out[2] == ')' && std::isalpha(static_cast<unsigned char>(out[1]))) out = out.substr(1, 1);
  if (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

// Splits at top-level commas (depth counts every bracket kind, so "[1, 2)" nests correctly).
std::vector<std::string> split_top_level(const std::string& s, const std::string& separator) {
  std::vector<std::string> parts;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '\\' && i + 1 < s.size() && (s[i + 1] == '{' || s[i + 1] == '}')) {
      depth += s[i + 1] == '{' ? 1 : -1;
      ++i;
      continue;
    }
    if (c == '(' || c == '[' || c == '{') ++depth;
    else if (c == ')' || c == ']' || c == '}') --depth;
    else if (depth == 0 && s.compare(i, separator.size(), separator) == 0) {
      parts.push_back(trim(s.substr(start, i - start)));
      start = i + separator.size();
      i += separator.size() - 1;
    }
  }
  parts.push_back(trim(s.substr(start)));
  return parts;
}

// True when s[0] opens a bracket whose match is the last character.
bool fully_bracketed(const std::string& s) {
  if (s.size() < 2 || std::string("([").find(s.front()) == std::string::npos ||
      std::string(")]").find(s.back()) == std::string::npos)
    return false;
  int depth = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '(' || s[i] == '[' || s[i] == '{') ++depth;
    if (s[i] == ')' || s[i] == ']' || s[i] == '}') --depth;
    if (depth == 0 && i + 1 < s.size()) return false;
  }
  return depth == 0;
}

// ------------------------------------------------------------------------------------------------
// Answer structures

struct Answer {
  enum class Kind { kInvalid, kText, kScalar, kEquation, kTuple, kIntervals, kSet, kMatrix } kind = Kind::kInvalid;
  std::string text;                         // kText, and the normalized source of every kind
  std::vector<MathExprPtr> items;           // kScalar: 1; kEquation: lhs, rhs; kTuple/kSet: elements
  char open = 0, close = 0;                 // kTuple brackets
  std::vector<Answer> parts;                // kIntervals: 2-tuples
  std::vector<std::vector<MathExprPtr>> rows;  // kMatrix
};

std::optional<MathExprPtr> parse_expr(const std::string& s) { return parse_math_expression(s); }

bool is_lone_variable(const MathExprPtr& e) { return e->kind == MathExpr::Kind::kVariable; }

Answer parse_answer(const std::string& normalized);

Answer parse_item(const std::string& s) {
  Answer a;
  a.text = s;
  // An equation at top level: "y = 2x + 3", "(x, y) = (1, 2)".
  const auto sides = split_top_level(s, "=");
  if (sides.size() == 2 && !sides[0].empty() && !sides[1].empty()) {
    if (fully_bracketed(sides[0]) && fully_bracketed(sides[1])) {  // (x, y) = (1, 2): the values
      Answer names = parse_answer(sides[0]);
      bool all_variables = names.kind == Answer::Kind::kTuple;
      for (const auto& item : names.items) all_variables = all_variables && is_lone_variable(item);
      if (all_variables) return parse_answer(sides[1]);
    }
    auto lhs = parse_expr(sides[0]), rhs = parse_expr(sides[1]);
    if (lhs && rhs) {
      a.kind = Answer::Kind::kEquation;
      a.items = {*lhs, *rhs};
      return a;
    }
    return a;
  }
  if (fully_bracketed(s)) {
    const auto inner = split_top_level(s.substr(1, s.size() - 2), ",");
    if (inner.size() >= 2) {
      a.kind = Answer::Kind::kTuple;
      a.open = s.front();
      a.close = s.back();
      for (const auto& part : inner) {
        auto e = parse_expr(part);
        if (!e) return Answer{Answer::Kind::kInvalid, s};
        a.items.push_back(*e);
      }
      return a;
    }
  }
  auto e = parse_expr(s);
  if (!e) return a;
  if (contains_plus_minus(**e)) {
    a.kind = Answer::Kind::kSet;
    a.items = expand_plus_minus(*e);
    return a;
  }
  a.kind = Answer::Kind::kScalar;
  a.items = {*e};
  return a;
}

Answer parse_answer(const std::string& s) {
  Answer a;
  a.text = s;
  if (s.empty()) return a;
  // Matrices.
  static const std::regex matrix(R"(^\\begin\{([pbBvV]?matrix)\}(.*)\\end\{\1\}$)");
  std::smatch m;
  if (std::regex_match(s, m, matrix)) {
    a.kind = Answer::Kind::kMatrix;
    for (const std::string& row : split_top_level(m[2].str(), "\\\\")) {
      if (row.empty()) continue;
      std::vector<MathExprPtr> cells;
      for (const std::string& cell : split_top_level(row, "&")) {
        auto e = parse_expr(cell);
        if (!e) return Answer{Answer::Kind::kInvalid, s};
        cells.push_back(*e);
      }
      a.rows.push_back(cells);
    }
    return a;
  }
  // Unions of intervals.
  const auto pieces = split_top_level(s, "\\cup");
  if (pieces.size() > 1) {
    a.kind = Answer::Kind::kIntervals;
    for (const auto& piece : pieces) {
      Answer interval = parse_item(piece);
      if (interval.kind != Answer::Kind::kTuple || interval.items.size() != 2) return Answer{Answer::Kind::kInvalid, s};
      a.parts.push_back(interval);
    }
    return a;
  }
  // Sets written with braces.
  if (s.rfind("\\{", 0) == 0 && s.size() >= 4 && s.compare(s.size() - 2, 2, "\\}") == 0) {
    Answer inner = parse_answer(s.substr(2, s.size() - 4));
    if (inner.kind == Answer::Kind::kScalar) inner.kind = Answer::Kind::kSet;
    if (inner.kind == Answer::Kind::kSet) return inner;
    return Answer{Answer::Kind::kInvalid, s};
  }
  // Bare comma lists: a set of values, or x = 1, y = 2 assignments (a tuple in the order given).
  const auto items = split_top_level(s, ",");
  if (items.size() > 1) {
    std::vector<Answer> parsed;
    for (const auto& item : items) parsed.push_back(parse_item(item));
    std::set<std::string> assigned;
    bool all_assignments = true;
    for (const auto& p : parsed) {
      all_assignments = all_assignments && p.kind == Answer::Kind::kEquation && is_lone_variable(p.items[0]);
      if (all_assignments) assigned.insert(p.items[0]->name);
    }
    if (all_assignments && assigned.size() == parsed.size()) {
      a.kind = Answer::Kind::kTuple;
      a.open = '(';
      a.close = ')';
      for (const auto& p : parsed) a.items.push_back(p.items[1]);
      return a;
    }
    a.kind = Answer::Kind::kSet;
    for (const auto& p : parsed) {
      if (p.kind == Answer::Kind::kScalar || p.kind == Answer::Kind::kSet) {
        a.items.insert(a.items.end(), p.items.begin(), p.items.end());
      } else if (p.kind == Answer::Kind::kEquation && is_lone_variable(p.items[0])) {
        a.items.push_back(p.items[1]);  // x = 2, x = 4
      } else {
        return Answer{Answer::Kind::kInvalid, s};
      }
    }
    return a;
  }
  return parse_item(s);
}

bool tuples_equal(const Answer& a, const Answer& b) {
  if (a.items.size() != b.items.size()) return false;
  // Two elements: an interval or a point, so the brackets must agree; longer ones are vectors.
  if (a.items.size() == 2 && (a.open != b.open || a.close != b.close)) return false;
  for (size_t i = 0; i < a.items.size(); ++i)
    if (!expressions_equal(a.items[i], b.items[i])) return false;
  return true;
}

bool sets_equal(const std::vector<MathExprPtr>& a, const std::vector<MathExprPtr>& b) {
  if (a.size() != b.size()) return false;
  std::vector<bool> used(b.size(), false);
  for (const auto& x : a) {
    bool found = false;
    for (size_t j = 0; j < b.size() && !found; ++j) {
      if (!used[j] && expressions_equal(x, b[j])) used[j] = found = true;
    }
    if (!found) return false;
  }
  return true;
}

bool answers_equal(const Answer& c, const Answer& g, std::string& reason) {
  using K = Answer::Kind;
  if (c.kind == K::kScalar && g.kind == K::kScalar) {
    reason = "compared as values";
    return expressions_equal(c.items[0], g.items[0]);
  }
  if (c.kind == K::kEquation && g.kind == K::kEquation) {
    reason = "compared as equations (up to a constant factor)";
    const MathExprPtr fc = std::make_shared<MathExpr>(MathExpr{MathExpr::Kind::kSub, {}, {}, {c.items[0], c.items[1]}});
    const MathExprPtr fg = std::make_shared<MathExpr>(MathExpr{MathExpr::Kind::kSub, {}, {}, {g.items[0], g.items[1]}});
    return expressions_proportional(fc, fg);
  }
  // "x = 5" against "5", either way round: compare the side that is not a lone variable.
  if (c.kind == K::kEquation && g.kind != K::kEquation && is_lone_variable(c.items[0])) {
    Answer rhs = c;
    rhs.kind = K::kScalar;
    rhs.items = {c.items[1]};
    return answers_equal(rhs, g, reason);
  }
  if (g.kind == K::kEquation && c.kind != K::kEquation && is_lone_variable(g.items[0])) {
    Answer rhs = g;
    rhs.kind = K::kScalar;
    rhs.items = {g.items[1]};
    return answers_equal(c, rhs, reason);
  }
  if (c.kind == K::kTuple && g.kind == K::kTuple) {
    reason = "compared as tuples";
    return tuples_equal(c, g);
  }
  if (c.kind == K::kIntervals || g.kind == K::kIntervals) {
    const std::vector<Answer> cs = c.kind == K::kIntervals ? c.parts : std::vector<Answer>{c};
    const std::vector<Answer> gs = g.kind == K::kIntervals ? g.parts : std::vector<Answer>{g};
    reason = "compared as intervals";
    if (cs.size() != gs.size()) return false;
    for (size_t i = 0; i < cs.size(); ++i)
      if (cs[i].kind != K::kTuple || gs[i].kind != K::kTuple || !tuples_equal(cs[i], gs[i])) return false;
    return true;
  }
  if ((c.kind == K::kSet || c.kind == K::kScalar) && (g.kind == K::kSet || g.kind == K::kScalar)) {
    reason = "compared as sets";
    return sets_equal(c.items, g.items);
  }
  if (c.kind == K::kMatrix && g.kind == K::kMatrix) {
    reason = "compared as matrices";
    if (c.rows.size() != g.rows.size()) return false;
    for (size_t r = 0; r < c.rows.size(); ++r) {
      if (c.rows[r].size() != g.rows[r].size()) return false;
      for (size_t k = 0; k < c.rows[r].size(); ++k)
        if (!expressions_equal(c.rows[r][k], g.rows[r][k])) return false;
    }
    return true;
  }
  reason = "different kinds of answer";
  return false;
}

}  // namespace

std::string normalize_math_answer(std::string_view answer) {
  std::string s = trim(answer);
  // Delimiters and wrappers that carry no meaning.
  for (const auto& [open, close] : std::vector<std::pair<std::string, std::string>>{{"$", "$"}, {"\\(", "\\)"}, {"\\[", "\\]"}})
    if (s.size() >= open.size() + close.size() && s.rfind(open, 0) == 0 && s.compare(s.size() - close.size(), close.size(), close) == 0)
      s = trim(s.substr(open.size(), s.size() - open.size() - close.size()));
  unwrap_commands(s, {"boxed", "fbox"});
  for (const char* drop : {"\\displaystyle", "\\textstyle", "\\left", "\\right", "\\bigl", "\\bigr", "\\Bigl", "\\Bigr",
                           "\\big", "\\Big", "\\!", "\\$"})
    replace_all(s, drop, "");
  replace_all(s, "$", "");
  replace_all(s, "\\\\", "\x01");  // protect matrix row breaks from the control-space rule below
  for (const char* space : {"\\,", "\\;", "\\:", "\\ ", "~"}) replace_all(s, space, " ");
  replace_all(s, "\x01", "\\\\");
  replace_all(s, "\\dfrac", "\\frac");
  replace_all(s, "\\tfrac", "\\frac");
  replace_all(s, "\\dbinom", "\\binom");
  replace_all(s, "{,}", "");
  // Unicode spellings.
  replace_all(s, "\xE2\x88\x92", "-");          // U+2212 minus
  replace_all(s, "\xCF\x80", "\\pi ");          // pi
  replace_all(s, "\xE2\x88\x9E", "\\infty ");   // infinity
  replace_all(s, "\xC2\xB7", "\\cdot ");        // middle dot
  replace_all(s, "\xC3\x97", "\\times ");       // multiplication sign
  replace_all(s, "\xC3\xB7", "\\div ");         // division sign
  replace_all(s, "\xC2\xB0", "");               // degree sign
  // Degrees and percent.
  for (const char* degree : {"^{\\circ}", "^\\circ", "\\circ", "\\degree"}) replace_all(s, degree, "");
  replace_all(s, "\\%", "%");
  static const std::regex words_percent(R"(\s*\bpercent\b)");
  s = std::regex_replace(s, words_percent, "%");
  static const std::regex words_degrees(R"(\s*(\\text\{\s*)?\bdegrees?\b(\s*\})?)");
  s = std::regex_replace(s, words_degrees, "");
  // Words inside text commands next to mathematics: "and"/"or" separate a list; other words are
  // units ("14 \mbox{ inches}") and are dropped.
  if (!is_text_wrapped(s)) {
    for (const std::string& cmd : kTextCommands) {
      const std::string head = "\\" + cmd + "{";
      for (size_t pos; (pos = s.find(head)) != std::string::npos;) {
        const size_t close = matching_brace(s, pos + head.size() - 1);
        if (close == std::string::npos) break;
        const std::string inner = trim(s.substr(pos + head.size(), close - pos - head.size()));
        const std::string replacement = (inner == "and" || inner == "or") ? "," : " ";
        s = s.substr(0, pos) + replacement + s.substr(close + 1);
      }
    }
  }
  s = trim(s);
  // A union written with a capital U between intervals.
  static const std::regex union_u(R"(([\)\]])\s*U\s*([\(\[]))");
  s = std::regex_replace(s, union_u, "$1 \\cup $2");
  // A base subscript after digits (1204_9, 4210_{5}) is dropped: the digits are compared.
  static const std::regex base(R"((\d)_\{?\d+\}?)");
  s = std::regex_replace(s, base, "$1");
  // Thousands separators: 12,441,600 and 1,008,016.25 are one number.
  static const std::regex thousands(R"(^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$)");
  if (std::regex_match(s, thousands)) replace_all(s, ",", "");
  // A sentence's final period.
  if (s.size() > 1 && s.back() == '.' && !std::isdigit(static_cast<unsigned char>(s[s.size() - 2]))) s.pop_back();
  if (s.size() > 1 && s.back() == '.' && std::isdigit(static_cast<unsigned char>(s[s.size() - 2])) &&
      s.find_first_of(".") == s.size() - 1)
    s.pop_back();  // "1." -> "1"
  return trim(s);
}

MathVerdict math_equivalent(std::string_view candidate, std::string_view gold) {
  MathVerdict verdict;
  const std::string c = normalize_math_answer(candidate), g = normalize_math_answer(gold);
  if (c.empty()) {
    verdict.reason = "empty candidate";
    return verdict;
  }
  const std::string ct = text_form(c), gt = text_form(g);
  // Text answers (a name, a letter choice, a word) are compared as text.
  if (is_text_wrapped(g) || is_text_wrapped(c)) {
    verdict.equivalent = ct == gt;
    verdict.reason = "compared as text";
    return verdict;
  }
  const Answer ca = parse_answer(c), ga = parse_answer(g);
  if (ca.kind == Answer::Kind::kInvalid || ga.kind == Answer::Kind::kInvalid) {
    verdict.equivalent = ct == gt;
    verdict.reason = "not parsed as math; compared as text";
    return verdict;
  }
  verdict.equivalent = answers_equal(ca, ga, verdict.reason);
  if (!verdict.equivalent && c == g) {
    verdict.equivalent = true;
    verdict.reason = "identical text";
  }
  return verdict;
}

std::optional<std::string> last_boxed(std::string_view view) {
  const std::string text(view);
  size_t best = std::string::npos;
  size_t head_size = 0;
  for (const std::string head : {"\\boxed{", "\\fbox{"}) {
    const size_t pos = text.rfind(head);
    if (pos != std::string::npos && (best == std::string::npos || pos > best)) {
      best = pos;
      head_size = head.size();
    }
  }
  if (best == std::string::npos) return std::nullopt;
  const size_t close = matching_brace(text, best + head_size - 1);
  if (close == std::string::npos) return std::nullopt;
  return text.substr(best + head_size, close - best - head_size);
}

std::optional<std::string> extract_final_answer(std::string_view completion) {
  if (auto boxed = last_boxed(completion)) return trim(*boxed);
  const std::string text(completion);
  const size_t open = text.rfind("<answer>");
  if (open != std::string::npos) {
    const size_t close = text.find("</answer>", open);
    const std::string inner = text.substr(open + 8, close == std::string::npos ? std::string::npos : close - open - 8);
    if (auto boxed = last_boxed(inner)) return trim(*boxed);
    return trim(inner);
  }
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
  const size_t phrase = lower.rfind("the answer is");
  if (phrase != std::string::npos) {
    std::string rest = trim(text.substr(phrase + 13));
    if (!rest.empty() && rest[0] == ':') rest = trim(rest.substr(1));
    const size_t end = rest.find('\n');
    rest = trim(rest.substr(0, end));
    while (!rest.empty() && (rest.back() == '.' || rest.back() == '!')) rest.pop_back();
    if (!rest.empty()) return rest;
  }
  const size_t hashes = text.rfind("####");
  if (hashes != std::string::npos) {
    std::string rest = trim(text.substr(hashes + 4));
    rest = trim(rest.substr(0, rest.find('\n')));
    if (!rest.empty()) return rest;
  }
  return std::nullopt;
}

std::string gold_answer(std::string_view gold_field) {
  const std::string text(gold_field);
  const size_t hashes = text.rfind("####");
  if (hashes == std::string::npos) return trim(text);
  std::string answer = trim(text.substr(hashes + 4));
  replace_all(answer, ",", "");
  return answer;
}

}  // namespace grpo
