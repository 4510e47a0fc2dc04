#pragma once
// A small LaTeX math expression language for answer checking: numbers (exact rationals while
// they stay rational), variables, pi, e, i, infinity, + - * / ^, implicit products, \frac,
// \sqrt, \binom, |x|, factorial, percent, trig/log functions and \pm. Values are evaluated
// exactly when rational, otherwise as long-double complex numbers.

#include <complex>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace grpo {

// An exact rational, or (exact == false) a complex approximation.
struct MathValue {
  bool valid = true;  // false: undefined (division by zero, bad domain)
  bool exact = false;
  int64_t num = 0, den = 1;  // when exact: num/den in lowest terms, den > 0
  std::complex<long double> z;
  int infinity = 0;  // +1 or -1 for +-infinity

  static MathValue rational(int64_t num, int64_t den = 1);
  static MathValue approx(std::complex<long double> z);
  static MathValue invalid();
  std::complex<long double> complex() const { return z; }
};

// True when a and b are the same number: exactly for two rationals, within a relative 1e-9
// otherwise (values that involve sqrt, pi, ... are compared as numbers, never rounded answers:
// 0.6667 is not 2/3).
bool same_value(const MathValue& a, const MathValue& b);

struct MathExpr;
using MathExprPtr = std::shared_ptr<const MathExpr>;

struct MathExpr {
  enum class Kind { kNumber, kVariable, kPi, kE, kI, kInfinity, kAdd, kSub, kMul, kDiv, kPow, kNeg,
                    kPlusMinus, kFunction, kFactorial, kPercent, kAbs, kBinom, kRoot };
  Kind kind = Kind::kNumber;
  MathValue number;                 // kNumber
  std::string name;                 // kVariable, kFunction
  std::vector<MathExprPtr> args;    // operands
};

// Parses a normalized LaTeX expression; nullopt when it is not one (the caller then compares
// text). `error` says why.
std::optional<MathExprPtr> parse_math_expression(const std::string& text, std::string* error = nullptr);

void collect_variables(const MathExpr& expr, std::set<std::string>& out);
bool contains_plus_minus(const MathExpr& expr);
// Every sign choice of the expression's \pm operators (2^k expressions; one if there is none).
std::vector<MathExprPtr> expand_plus_minus(const MathExprPtr& expr);

MathValue evaluate(const MathExpr& expr, const std::map<std::string, std::complex<long double>>& variables);

// Equal as functions of their variables: same value at several random points (exactly equal
// when both are constant rationals).
bool expressions_equal(const MathExprPtr& a, const MathExprPtr& b);

// a = c * b for one nonzero constant c at every point (two equations describing the same set).
bool expressions_proportional(const MathExprPtr& a, const MathExprPtr& b);

}  // namespace grpo
