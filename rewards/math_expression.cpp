#include "rewards/math_expression.h"

#include <cctype>
#include <cmath>
#include <numeric>
#include <random>

namespace grpo {
namespace {

using Complex = std::complex<long double>;
using Int128 = __int128;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

Int128 gcd128(Int128 a, Int128 b) {
  if (a < 0) a = -a;
  if (b < 0) b = -b;
  while (b != 0) {
    const Int128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// An exact rational when n/d fits in int64 after reduction, else its approximation.
MathValue make_rational(Int128 n, Int128 d) {
  if (d == 0) return MathValue::invalid();
  if (d < 0) {
    n = -n;
    d = -d;
  }
  const Int128 g = gcd128(n, d);
  if (g > 1) {
    n /= g;
    d /= g;
  }
  if (n > kInt64Max || n < -kInt64Max || d > kInt64Max)
    return MathValue::approx(Complex(static_cast<long double>(n) / static_cast<long double>(d), 0));
  MathValue v;
  v.exact = true;
  v.num = static_cast<int64_t>(n);
  v.den = static_cast<int64_t>(d);
  v.z = Complex(static_cast<long double>(v.num) / static_cast<long double>(v.den), 0);
  return v;
}

// ----------------------------------------------------------------------------------------------
// Lexer

struct Token {
  enum class Kind { kNumber, kIdent, kCommand, kSymbol, kEnd } kind = Kind::kEnd;
  std::string text;
};

const std::set<std::string> kWordFunctions = {"sqrt", "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos",
                                              "arctan", "ln", "log", "exp", "pi", "sinh", "cosh", "tanh"};
const std::set<std::string> kFunctionCommands = {"sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan",
                                                 "sinh", "cosh", "tanh", "ln", "log", "exp"};
const std::set<std::string> kGreek = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta",
                                      "theta", "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho",
                                      "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma",
                                      "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega"};

bool lex(const std::string& s, std::vector<Token>& tokens, std::string& error) {
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || (c == '.' && i + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])))) {
      size_t j = i;
      while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      if (j < s.size() && s[j] == '.') {
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      // Scientific notation 2.5e3 / 1e-4: only an 'e' directly followed by an exponent.
      if (j < s.size() && (s[j] == 'e' || s[j] == 'E')) {
        size_t k = j + 1;
        if (k < s.size() && (s[k] == '+' || s[k] == '-')) ++k;
        if (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) {
          while (k < s.size() && std::isdigit(static_cast<unsigned char>(s[k]))) ++k;
          j = k;
        }
      }
      tokens.push_back({Token::Kind::kNumber, s.substr(i, j - i)});
      i = j;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && std::isalpha(static_cast<unsigned char>(s[j]))) ++j;
      std::string run = s.substr(i, j - i);
      // A known word at the start of the run (sqrt, pi, sin, ...) is one token; other letters
      // are single-letter variables.
      size_t pos = 0;
      while (pos < run.size()) {
        std::string best;
        for (const auto& w : kWordFunctions)
          if (run.compare(pos, w.size(), w) == 0 && w.size() > best.size()) best = w;
        if (!best.empty()) {
          tokens.push_back({Token::Kind::kIdent, best});
          pos += best.size();
        } else {
          tokens.push_back({Token::Kind::kIdent, run.substr(pos, 1)});
          ++pos;
        }
      }
      i = j;
      continue;
    }
    if (c == '\\') {
      if (i + 1 < s.size() && !std::isalpha(static_cast<unsigned char>(s[i + 1]))) {
        tokens.push_back({Token::Kind::kCommand, s.substr(i + 1, 1)});  // \{ \} \% \| ...
        i += 2;
        continue;
      }
      size_t j = i + 1;
      while (j < s.size() && std::isalpha(static_cast<unsigned char>(s[j]))) ++j;
      tokens.push_back({Token::Kind::kCommand, s.substr(i + 1, j - i - 1)});
      i = j;
      continue;
    }
    if (std::string("+-*/^_()[]{}|!,=%'<>").find(c) != std::string::npos) {
      tokens.push_back({Token::Kind::kSymbol, std::string(1, c)});
      ++i;
      continue;
    }
    error = std::string("unexpected character '") + c + "'";
    return false;
  }
  tokens.push_back({Token::Kind::kEnd, ""});
  return true;
}

// ----------------------------------------------------------------------------------------------
// Parser

MathExprPtr node(MathExpr::Kind kind, std::vector<MathExprPtr> args = {}, std::string name = {}) {
  auto e = std::make_shared<MathExpr>();
  e->kind = kind;
  e->args = std::move(args);
  e->name = std::move(name);
  return e;
}

MathExprPtr number_node(const MathValue& v) {
  auto e = std::make_shared<MathExpr>();
  e->kind = MathExpr::Kind::kNumber;
  e->number = v;
  return e;
}

std::optional<MathValue> parse_number(const std::string& text) {
  const auto e_pos = text.find_first_of("eE");
  const std::string mantissa = text.substr(0, e_pos);
  int exponent = e_pos == std::string::npos ? 0 : std::stoi(text.substr(e_pos + 1));
  const auto dot = mantissa.find('.');
  std::string digits = mantissa;
  if (dot != std::string::npos) {
    digits = mantissa.substr(0, dot) + mantissa.substr(dot + 1);
    exponent -= static_cast<int>(mantissa.size() - dot - 1);
  }
  digits.erase(0, std::min(digits.find_first_not_of('0'), digits.size() ? digits.size() - 1 : 0));
  if (digits.empty()) digits = "0";
  if (digits.size() > 36 || std::abs(exponent) > 36) return MathValue::approx(Complex(std::stold(text), 0));
  Int128 n = 0;
  for (char d : digits) n = n * 10 + (d - '0');
  Int128 d = 1;
  for (int k = 0; k < std::abs(exponent); ++k) (exponent > 0 ? n : d) *= 10;
  return make_rational(n, d);
}

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  MathExprPtr parse_all() {
    MathExprPtr e = additive();
    if (peek().kind != Token::Kind::kEnd) fail("unexpected '" + peek().text + "'");
    return e;
  }
  const std::string& error() const { return error_; }
  bool failed() const { return !error_.empty(); }

 private:
  const Token& peek(size_t ahead = 0) const { return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)]; }
  bool is_symbol(const std::string& s, size_t ahead = 0) const {
    return peek(ahead).kind == Token::Kind::kSymbol && peek(ahead).text == s;
  }
  bool is_command(const std::string& s, size_t ahead = 0) const {
    return peek(ahead).kind == Token::Kind::kCommand && peek(ahead).text == s;
  }
  Token next() { return tokens_[std::min(pos_++, tokens_.size() - 1)]; }
  void fail(const std::string& message) {
    if (error_.empty()) error_ = message;
    pos_ = tokens_.size() - 1;
  }
  void expect_symbol(const std::string& s) {
    if (!is_symbol(s)) fail("expected '" + s + "'");
    else next();
  }

  MathExprPtr additive() {
    MathExprPtr left = term();
    while (!failed()) {
      if (is_symbol("+")) {
        next();
        left = node(MathExpr::Kind::kAdd, {left, term()});
      } else if (is_symbol("-")) {
        next();
        left = node(MathExpr::Kind::kSub, {left, term()});
      } else if (is_command("pm") || is_command("mp")) {
        next();
        left = node(MathExpr::Kind::kPlusMinus, {left, term()});
      } else {
        break;
      }
    }
    return left;
  }

  bool starts_primary() const {
    const Token& t = peek();
    switch (t.kind) {
      case Token::Kind::kNumber:
      case Token::Kind::kIdent:
        return true;
      case Token::Kind::kSymbol:
        return t.text == "(" || t.text == "{" || t.text == "|";
      case Token::Kind::kCommand:
        return t.text == "frac" || t.text == "sqrt" || t.text == "pi" || t.text == "infty" || t.text == "binom" ||
               t.text == "left" || kFunctionCommands.count(t.text) || kGreek.count(t.text) || t.text == "lfloor" ||
               t.text == "lceil";
      default:
        return false;
    }
  }

  MathExprPtr term() {
    MathExprPtr left = unary();
    while (!failed()) {
      if (is_symbol("*") || is_command("cdot") || is_command("times")) {
        next();
        left = node(MathExpr::Kind::kMul, {left, unary()});
      } else if (is_symbol("/") || is_command("div")) {
        next();
        left = node(MathExpr::Kind::kDiv, {left, unary()});
      } else if (starts_primary()) {
        // A mixed number: an integer directly followed by \frac of two integers (2\frac{1}{2}).
        if (left->kind == MathExpr::Kind::kNumber && left->number.exact && left->number.den == 1 && is_command("frac")) {
          MathExprPtr right = power();
          if (right->kind == MathExpr::Kind::kDiv && right->args[0]->kind == MathExpr::Kind::kNumber &&
              right->args[1]->kind == MathExpr::Kind::kNumber && right->args[0]->number.exact &&
              right->args[0]->number.den == 1 && right->args[1]->number.den == 1) {
            left = node(MathExpr::Kind::kAdd, {left, right});
          } else {
            left = node(MathExpr::Kind::kMul, {left, right});
          }
          continue;
        }
        left = node(MathExpr::Kind::kMul, {left, power()});
      } else {
        break;
      }
    }
    return left;
  }

  MathExprPtr unary() {
    if (is_symbol("-")) {
      next();
      return node(MathExpr::Kind::kNeg, {unary()});
    }
    if (is_symbol("+")) {
      next();
      return unary();
    }
    return power();
  }

  MathExprPtr power() {
    MathExprPtr base = postfix(primary());
    if (is_symbol("^")) {
      next();
      MathExprPtr exponent;
      if (is_symbol("{")) {
        next();
        exponent = additive();
        expect_symbol("}");
      } else if (is_symbol("-")) {
        next();
        exponent = node(MathExpr::Kind::kNeg, {postfix(primary())});
      } else {
        exponent = single_token_atom();
      }
      return postfix(node(MathExpr::Kind::kPow, {base, exponent}));
    }
    return base;
  }

  MathExprPtr postfix(MathExprPtr e) {
    while (!failed()) {
      if (is_symbol("!")) {
        next();
        e = node(MathExpr::Kind::kFactorial, {e});
      } else if (is_symbol("%") || is_command("%")) {
        next();
        e = node(MathExpr::Kind::kPercent, {e});
      } else {
        break;
      }
    }
    return e;
  }

  // x^2, x^a, \frac12: one digit or one letter without braces.
  MathExprPtr single_token_atom() {
    const Token t = peek();
    if (t.kind == Token::Kind::kNumber) {
      next();
      if (t.text.size() > 1 && t.text.find_first_of(".eE") == std::string::npos) {
        // \frac12 and x^23: only the first digit belongs to the command; push the rest back.
        tokens_.insert(tokens_.begin() + static_cast<std::ptrdiff_t>(pos_), Token{Token::Kind::kNumber, t.text.substr(1)});
        return number_node(*parse_number(t.text.substr(0, 1)));
      }
      return number_node(*parse_number(t.text));
    }
    return primary();
  }

  MathExprPtr group_argument() {
    if (is_symbol("{")) {
      next();
      MathExprPtr e = additive();
      expect_symbol("}");
      return e;
    }
    return single_token_atom();
  }

  MathExprPtr function_call(const std::string& name) {
    // \log_{b} x, \sin^2 x, \sin(x), \sin x
    MathExprPtr base_of_log;
    if (name == "log" && is_symbol("_")) {
      next();
      base_of_log = group_argument();
    }
    MathExprPtr exponent;
    if (is_symbol("^")) {
      next();
      exponent = group_argument();
    }
    MathExprPtr arg = power();
    MathExprPtr call = node(MathExpr::Kind::kFunction, {arg}, name);
    if (base_of_log) call = node(MathExpr::Kind::kDiv, {call, node(MathExpr::Kind::kFunction, {base_of_log}, "log")});
    if (exponent) call = node(MathExpr::Kind::kPow, {call, exponent});
    return call;
  }

  MathExprPtr primary() {
    if (failed()) return number_node(MathValue::invalid());
    const Token t = next();
    switch (t.kind) {
      case Token::Kind::kNumber: {
        auto v = parse_number(t.text);
        if (!v) fail("bad number");
        return number_node(v.value_or(MathValue::invalid()));
      }
      case Token::Kind::kIdent: {
        if (t.text == "pi") return node(MathExpr::Kind::kPi);
        if (t.text == "sqrt") return node(MathExpr::Kind::kFunction, {power()}, "sqrt");
        if (kWordFunctions.count(t.text)) return function_call(t.text);
        if (t.text == "e") return node(MathExpr::Kind::kE);
        if (t.text == "i") return node(MathExpr::Kind::kI);
        return variable(t.text);
      }
      case Token::Kind::kSymbol: {
        if (t.text == "(" || t.text == "{") {
          MathExprPtr e = additive();
          expect_symbol(t.text == "(" ? ")" : "}");
          return e;
        }
        if (t.text == "|") {
          MathExprPtr e = additive();
          expect_symbol("|");
          return node(MathExpr::Kind::kAbs, {e});
        }
        fail("unexpected '" + t.text + "'");
        return number_node(MathValue::invalid());
      }
      case Token::Kind::kCommand: {
        const std::string& c = t.text;
        if (c == "frac") {
          MathExprPtr num = group_argument();
          MathExprPtr den = group_argument();
          return node(MathExpr::Kind::kDiv, {num, den});
        }
        if (c == "binom") {
          MathExprPtr n = group_argument();
          MathExprPtr k = group_argument();
          return node(MathExpr::Kind::kBinom, {n, k});
        }
        if (c == "sqrt") {
          if (is_symbol("[")) {
            next();
            MathExprPtr degree = additive();
            expect_symbol("]");
            return node(MathExpr::Kind::kRoot, {group_argument(), degree});
          }
          return node(MathExpr::Kind::kFunction, {group_argument()}, "sqrt");
        }
        if (c == "pi") return node(MathExpr::Kind::kPi);
        if (c == "infty") return node(MathExpr::Kind::kInfinity);
        if (c == "lfloor" || c == "lceil") {
          MathExprPtr e = additive();
          if (!is_command(c == "lfloor" ? "rfloor" : "rceil")) fail("unclosed " + c);
          next();
          return node(MathExpr::Kind::kFunction, {e}, c == "lfloor" ? "floor" : "ceil");
        }
        if (kFunctionCommands.count(c)) return function_call(c);
        if (kGreek.count(c)) return variable(c);
        fail("unsupported command \\" + c);
        return number_node(MathValue::invalid());
      }
      default:
        fail("unexpected end");
        return number_node(MathValue::invalid());
    }
  }

  MathExprPtr variable(std::string name) {
    if (is_symbol("_")) {  // a_1, x_{n}
      next();
      const Token sub = next();
      if (sub.kind == Token::Kind::kSymbol && sub.text == "{") {
        std::string inner;
        while (!is_symbol("}") && peek().kind != Token::Kind::kEnd) inner += next().text;
        expect_symbol("}");
        name += "_" + inner;
      } else {
        name += "_" + sub.text;
      }
    }
    return node(MathExpr::Kind::kVariable, {}, name);
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  std::string error_;
};

// ----------------------------------------------------------------------------------------------
// Evaluation

MathValue apply_binary(MathExpr::Kind kind, const MathValue& a, const MathValue& b) {
  if (!a.valid || !b.valid) return MathValue::invalid();
  if (a.infinity != 0 || b.infinity != 0) {
    if (kind == MathExpr::Kind::kAdd && a.infinity != 0 && b.infinity == 0) return a;
    if (kind == MathExpr::Kind::kAdd && b.infinity != 0 && a.infinity == 0) return b;
    return MathValue::invalid();
  }
  const bool exact = a.exact && b.exact;
  switch (kind) {
    case MathExpr::Kind::kAdd:
      if (exact) return make_rational(Int128(a.num) * b.den + Int128(b.num) * a.den, Int128(a.den) * b.den);
      return MathValue::approx(a.z + b.z);
    case MathExpr::Kind::kSub:
      if (exact) return make_rational(Int128(a.num) * b.den - Int128(b.num) * a.den, Int128(a.den) * b.den);
      return MathValue::approx(a.z - b.z);
    case MathExpr::Kind::kMul:
      if (exact) return make_rational(Int128(a.num) * b.num, Int128(a.den) * b.den);
      return MathValue::approx(a.z * b.z);
    case MathExpr::Kind::kDiv:
      if (exact) return make_rational(Int128(a.num) * b.den, Int128(a.den) * b.num);
      if (std::abs(b.z) == 0) return MathValue::invalid();
      return MathValue::approx(a.z / b.z);
    case MathExpr::Kind::kPow: {
      if (exact && b.den == 1 && std::llabs(b.num) <= 256) {
        MathValue result = MathValue::rational(1);
        MathValue base = a;
        for (int64_t k = 0; k < std::llabs(b.num) && result.exact; ++k) result = apply_binary(MathExpr::Kind::kMul, result, base);
        if (result.exact) return b.num >= 0 ? result : apply_binary(MathExpr::Kind::kDiv, MathValue::rational(1), result);
      }
      if (std::abs(a.z) == 0) return std::real(b.z) > 0 ? MathValue::rational(0) : MathValue::invalid();
      return MathValue::approx(std::pow(a.z, b.z));
    }
    default:
      return MathValue::invalid();
  }
}

MathValue factorial(const MathValue& v) {
  if (!v.exact || v.den != 1 || v.num < 0 || v.num > 30) return MathValue::invalid();
  Int128 f = 1;
  for (int64_t k = 2; k <= v.num; ++k) f *= k;
  return make_rational(f, 1);
}

MathValue apply_function(const std::string& name, const MathValue& v) {
  if (!v.valid || v.infinity != 0) return MathValue::invalid();
  const Complex z = v.z;
  if (name == "sqrt") {
    if (v.exact && v.num >= 0) {  // exact when both parts are perfect squares
      const auto rn = static_cast<int64_t>(std::llround(std::sqrt(static_cast<long double>(v.num))));
      const auto rd = static_cast<int64_t>(std::llround(std::sqrt(static_cast<long double>(v.den))));
      if (rn * rn == v.num && rd * rd == v.den) return MathValue::rational(rn, rd);
    }
    return MathValue::approx(std::sqrt(z));
  }
  if (name == "sin") return MathValue::approx(std::sin(z));
  if (name == "cos") return MathValue::approx(std::cos(z));
  if (name == "tan") return MathValue::approx(std::tan(z));
  if (name == "sec") return MathValue::approx(1.0L / std::cos(z));
  if (name == "csc") return MathValue::approx(1.0L / std::sin(z));
  if (name == "cot") return MathValue::approx(1.0L / std::tan(z));
  if (name == "arcsin") return MathValue::approx(std::asin(z));
  if (name == "arccos") return MathValue::approx(std::acos(z));
  if (name == "arctan") return MathValue::approx(std::atan(z));
  if (name == "sinh") return MathValue::approx(std::sinh(z));
  if (name == "cosh") return MathValue::approx(std::cosh(z));
  if (name == "tanh") return MathValue::approx(std::tanh(z));
  if (name == "ln") return std::abs(z) == 0 ? MathValue::invalid() : MathValue::approx(std::log(z));
  if (name == "log") return std::abs(z) == 0 ? MathValue::invalid() : MathValue::approx(std::log10(z));
  if (name == "exp") return MathValue::approx(std::exp(z));
  if (name == "floor" && std::imag(z) == 0) return MathValue::rational(static_cast<int64_t>(std::floor(std::real(z))));
  if (name == "ceil" && std::imag(z) == 0) return MathValue::rational(static_cast<int64_t>(std::ceil(std::real(z))));
  return MathValue::invalid();
}

}  // namespace

MathValue MathValue::rational(int64_t num, int64_t den) { return make_rational(num, den); }
MathValue MathValue::approx(std::complex<long double> z) {
  MathValue v;
  v.exact = false;
  v.z = z;
  v.valid = std::isfinite(z.real()) && std::isfinite(z.imag());
  return v;
}
MathValue MathValue::invalid() {
  MathValue v;
  v.valid = false;
  return v;
}

bool same_value(const MathValue& a, const MathValue& b) {
  if (!a.valid || !b.valid) return false;
  if (a.infinity != 0 || b.infinity != 0) return a.infinity == b.infinity;
  if (a.exact && b.exact) return a.num == b.num && a.den == b.den;
  const long double scale = std::max(std::abs(a.z), std::abs(b.z));
  return std::abs(a.z - b.z) <= 1e-9L * scale + 1e-12L;
}

std::optional<MathExprPtr> parse_math_expression(const std::string& text, std::string* error) {
  std::vector<Token> tokens;
  std::string lex_error;
  if (!lex(text, tokens, lex_error)) {
    if (error) *error = lex_error;
    return std::nullopt;
  }
  if (tokens.size() == 1) {
    if (error) *error = "empty expression";
    return std::nullopt;
  }
  Parser parser(std::move(tokens));
  MathExprPtr e = parser.parse_all();
  if (parser.failed()) {
    if (error) *error = parser.error();
    return std::nullopt;
  }
  return e;
}

void collect_variables(const MathExpr& e, std::set<std::string>& out) {
  if (e.kind == MathExpr::Kind::kVariable) out.insert(e.name);
  for (const auto& a : e.args) collect_variables(*a, out);
}

bool contains_plus_minus(const MathExpr& e) {
  if (e.kind == MathExpr::Kind::kPlusMinus) return true;
  for (const auto& a : e.args)
    if (contains_plus_minus(*a)) return true;
  return false;
}

std::vector<MathExprPtr> expand_plus_minus(const MathExprPtr& e) {
  std::vector<std::vector<MathExprPtr>> options;
  for (const auto& a : e->args) options.push_back(expand_plus_minus(a));
  std::vector<MathExprPtr> results;
  // Cartesian product of the arguments' expansions.
  std::vector<size_t> index(options.size(), 0);
  for (;;) {
    std::vector<MathExprPtr> args;
    for (size_t k = 0; k < options.size(); ++k) args.push_back(options[k][index[k]]);
    if (e->kind == MathExpr::Kind::kPlusMinus) {
      results.push_back(node(MathExpr::Kind::kAdd, args));
      results.push_back(node(MathExpr::Kind::kSub, args));
    } else {
      auto copy = std::make_shared<MathExpr>(*e);
      copy->args = args;
      results.push_back(copy);
    }
    size_t k = 0;
    while (k < options.size() && ++index[k] == options[k].size()) index[k++] = 0;
    if (k == options.size()) break;
  }
  return results;
}

MathValue evaluate(const MathExpr& e, const std::map<std::string, std::complex<long double>>& vars) {
  using K = MathExpr::Kind;
  switch (e.kind) {
    case K::kNumber: return e.number;
    case K::kVariable: {
      const auto it = vars.find(e.name);
      return it == vars.end() ? MathValue::invalid() : MathValue::approx(it->second);
    }
    case K::kPi: return MathValue::approx(Complex(3.14159265358979323846264338327950288L, 0));
    case K::kE: return MathValue::approx(Complex(2.71828182845904523536028747135266250L, 0));
    case K::kI: return MathValue::approx(Complex(0, 1));
    case K::kInfinity: {
      MathValue v = MathValue::approx(Complex(0, 0));
      v.infinity = 1;
      return v;
    }
    case K::kNeg: {
      MathValue v = evaluate(*e.args[0], vars);
      if (v.infinity != 0) {
        v.infinity = -v.infinity;
        return v;
      }
      return apply_binary(K::kSub, MathValue::rational(0), v);
    }
    case K::kAdd: case K::kSub: case K::kMul: case K::kDiv: case K::kPow:
      return apply_binary(e.kind, evaluate(*e.args[0], vars), evaluate(*e.args[1], vars));
    case K::kPlusMinus: return MathValue::invalid();  // expand first
    case K::kFunction: return apply_function(e.name, evaluate(*e.args[0], vars));
    case K::kFactorial: return factorial(evaluate(*e.args[0], vars));
    case K::kPercent: return apply_binary(K::kDiv, evaluate(*e.args[0], vars), MathValue::rational(100));
    case K::kAbs: {
      const MathValue v = evaluate(*e.args[0], vars);
      if (v.exact) return MathValue::rational(std::llabs(v.num), v.den);
      return v.valid ? MathValue::approx(std::abs(v.z)) : v;
    }
    case K::kBinom: {
      const MathValue n = evaluate(*e.args[0], vars), k = evaluate(*e.args[1], vars);
      if (!n.exact || !k.exact || n.den != 1 || k.den != 1 || k.num < 0 || k.num > n.num) return MathValue::invalid();
      Int128 r = 1;
      for (int64_t j = 1; j <= k.num; ++j) r = r * (n.num - k.num + j) / j;
      return make_rational(r, 1);
    }
    case K::kRoot: {
      const MathValue x = evaluate(*e.args[0], vars), n = evaluate(*e.args[1], vars);
      if (!x.valid || !n.valid) return MathValue::invalid();
      if (std::imag(x.z) == 0 && std::real(x.z) < 0 && n.exact && n.den == 1 && n.num % 2 == 1)
        return MathValue::approx(-std::pow(-std::real(x.z), 1.0L / n.num));
      return MathValue::approx(std::pow(x.z, 1.0L / n.z));
    }
  }
  return MathValue::invalid();
}

namespace {

std::vector<std::map<std::string, Complex>> sample_points(const std::set<std::string>& names) {
  std::mt19937_64 rng(12345);
  std::uniform_real_distribution<double> dist(0.3, 2.7);
  std::vector<std::map<std::string, Complex>> points;
  const int count = names.empty() ? 1 : 6;
  for (int p = 0; p < count; ++p) {
    std::map<std::string, Complex> point;
    for (const auto& name : names) point[name] = Complex(dist(rng), 0);
    points.push_back(point);
  }
  return points;
}

}  // namespace

bool expressions_equal(const MathExprPtr& a, const MathExprPtr& b) {
  std::set<std::string> names;
  collect_variables(*a, names);
  collect_variables(*b, names);
  int compared = 0;
  for (const auto& point : sample_points(names)) {
    const MathValue va = evaluate(*a, point), vb = evaluate(*b, point);
    if (!va.valid && !vb.valid && va.infinity == 0 && vb.infinity == 0) continue;  // both undefined here
    if (!same_value(va, vb)) return false;
    ++compared;
  }
  return compared > 0;
}

bool expressions_proportional(const MathExprPtr& a, const MathExprPtr& b) {
  std::set<std::string> names;
  collect_variables(*a, names);
  collect_variables(*b, names);
  std::optional<Complex> ratio;
  for (const auto& point : sample_points(names)) {
    const MathValue va = evaluate(*a, point), vb = evaluate(*b, point);
    if (!va.valid || !vb.valid || va.infinity != 0 || vb.infinity != 0) return false;
    const bool a_zero = std::abs(va.z) <= 1e-12L, b_zero = std::abs(vb.z) <= 1e-12L;
    if (a_zero || b_zero) {
      if (a_zero != b_zero) return false;
      continue;
    }
    const Complex r = va.z / vb.z;
    if (!ratio) ratio = r;
    else if (std::abs(*ratio - r) > 1e-9L * std::abs(*ratio)) return false;
  }
  return ratio.has_value() || names.empty();
}

}  // namespace grpo
