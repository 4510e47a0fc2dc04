// The math grader against ../shared/data/math-grading (GRPO_MATH_GRADING, default public.jsonl):
// verdicts of OpenAI's PRM800K grader and of Math-Verify on candidate/gold pairs. Where the two
// agree, grpo-cpp must agree with them on at least 99% of pairs; every remaining difference must
// be listed below as deliberate. Where they disagree, the verdict is mathematics' (docs/rewards.md).

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "rewards/math_grader.h"
#include "tests/support/fixtures.h"

namespace grpo {
namespace {

std::string grading_file() { return testing::shared_path("GRPO_MATH_GRADING", "data/math-grading/public.jsonl"); }

// Pairs where both peers agree and grpo-cpp deliberately does not: (candidate, gold) -> why.
const std::map<std::pair<std::string, std::string>, std::string> kDeliberateDifferences = {
    {{"180°", "180^\\circ"}, "U+00B0 is the degree sign; both peers miss the Unicode spelling"},
};

TEST(MathGrading, AgreesWithPeersWhereTheyAgree) {
  std::ifstream in(grading_file());
  ASSERT_TRUE(in) << grading_file();
  int agreed = 0, matched = 0, disagreed = 0, with_prm = 0, with_mv = 0, total = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const nlohmann::json row = nlohmann::json::parse(line);
    const std::string candidate = row["candidate"], gold = row["gold"];
    const bool prm = row["prm800k_grader"];
    const bool mv = row["math_verify"].is_boolean() ? row["math_verify"].get<bool>() : prm;
    const MathVerdict verdict = math_equivalent(candidate, gold);
    ++total;
    with_prm += verdict.equivalent == prm;
    with_mv += verdict.equivalent == mv;
    if (prm != mv) {
      ++disagreed;
      continue;
    }
    ++agreed;
    if (verdict.equivalent == prm) {
      ++matched;
      continue;
    }
    const auto deliberate = kDeliberateDifferences.find({candidate, gold});
    if (deliberate == kDeliberateDifferences.end())
      ADD_FAILURE() << row["id"] << ": peers say " << prm << ", grpo-cpp says " << verdict.equivalent << " ("
                    << verdict.reason << ")\n  candidate: " << candidate << "\n  gold:      " << gold;
  }
  const double agreement = agreed ? static_cast<double>(matched) / agreed : 0;
  std::printf("math grading: %d pairs; where peers agree (%d): %.1f%%; with PRM800K grader %.1f%%, with Math-Verify %.1f%%\n",
              total, agreed, 100 * agreement, 100.0 * with_prm / total, 100.0 * with_mv / total);
  EXPECT_GE(agreement, 0.99);
}

}  // namespace
}  // namespace grpo
