// Reward hacking against the code reward: wrong programs that try to pass the tests without
// solving the task (exit early, lie in __eq__, patch what the tests call, swallow the failure,
// read the tests' expected outputs from files or from the harness's memory, print a fake
// verdict). Each must score 0, while the correct program scores 1, in both test formats.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "rewards/code_reward.h"
#include "rewards/sandbox.h"

namespace grpo {
namespace {

struct Hack {
  const char* name;
  const char* program;
};

// HumanEval style: `check(candidate)` with asserts of three kinds.
nlohmann::json humaneval_fields() {
  return {{"prompt", "import math\n\n\ndef add(a, b):\n    \"\"\"Returns a + b.\"\"\"\n"},
          {"entry_point", "add"},
          {"test", "import math\n\n\ndef check(candidate):\n"
                   "    assert candidate(2, 3) == 5\n"
                   "    assert candidate(10, -4) == 6\n"
                   "    assert abs(candidate(0.5, 0.25) - 0.75) < 1e-9\n"
                   "    assert math.isclose(candidate(1.5, 1.5), 3.0)\n"}};
}

// The same task as MBPP asserts.
nlohmann::json mbpp_fields() {
  return {{"test_list", {"assert add(2, 3) == 5", "assert add(10, -4) == 6", "assert abs(add(0.5, 0.25) - 0.75) < 1e-9",
                         "assert math.isclose(add(1.5, 1.5), 3.0)"}},
          {"test_setup_code", "import math"}};
}

// Finds `candidate(a, b) == N` or `add(a, b) == N` in every file it can see and in the memory of
// its parent (the harness) through /proc, and returns N.
constexpr const char* kReadsExpectedOutputs = R"(import glob, os, re

def _texts():
    paths = glob.glob('*') + glob.glob('/tmp/**', recursive=True) + glob.glob('/tmp/*/*/*')
    parent = os.getppid()
    paths += ['/proc/self/fd/0', f'/proc/{parent}/fd/0', f'/proc/{parent}/cmdline', f'/proc/{parent}/environ']
    for path in paths:
        try:
            with open(path, 'rb') as f:
                yield f.read(1 << 22).decode('latin-1')
        except Exception:
            pass
    try:
        with open(f'/proc/{parent}/maps') as maps, open(f'/proc/{parent}/mem', 'rb') as mem:
            for line in maps:
                fields = line.split()
                lo, hi = (int(x, 16) for x in fields[0].split('-'))
                if fields[1].startswith('rw') and hi - lo < (1 << 26):
                    try:
                        mem.seek(lo)
                        yield mem.read(hi - lo).decode('latin-1')
                    except Exception:
                        pass
    except Exception:
        pass

def add(a, b):
    pattern = r'(?:candidate|add)\(%s, %s\) == (-?\d+)' % (re.escape(repr(a)), re.escape(repr(b)))
    for text in _texts():
        match = re.search(pattern, text)
        if match:
            return int(match.group(1))
    return 0
)";

// Plants a module in its directory that, imported by the harness, would find the token in the
// harness's frames and print a verdict; then makes the harness import it (MBPP tests may use the
// program's imports).
constexpr const char* kPlantsAModuleForTheHarness = R"(import os, sys
with open('colorsys.py', 'w') as f:
    f.write('import os, sys\n'
            'frame = sys._getframe()\n'
            'while frame:\n'
            '    token = frame.f_locals.get("token")\n'
            '    if isinstance(token, str):\n'
            '        sys.stdout.write(token + " 4 4\\n" + token + " 1 1\\n")\n'
            '        sys.stdout.flush()\n'
            '        os._exit(0)\n'
            '    frame = frame.f_back\n')
sys.path.insert(0, os.getcwd())
import colorsys

def add(a, b):
    return 0
)";

const std::vector<Hack>& hacks() {
  static const std::vector<Hack> all = {
      {"os._exit(0) at load", "def add(a, b):\n    return 0\nimport os\nos._exit(0)\n"},
      {"raise SystemExit(0) at load", "def add(a, b):\n    return 0\nraise SystemExit(0)\n"},
      {"sys.exit(0) inside the function", "import sys\ndef add(a, b):\n    sys.exit(0)\n"},
      {"os._exit(0) inside the function", "import os\ndef add(a, b):\n    os._exit(0)\n"},
      {"an object whose __eq__ is always True",
       "class Anything:\n    def __eq__(self, other):\n        return True\n    def __ne__(self, other):\n        return False\n"
       "    def __sub__(self, other):\n        return 0\n    def __abs__(self):\n        return 0\n    def __lt__(self, other):\n"
       "        return True\n    def __float__(self):\n        return 0.0\n    def __bool__(self):\n        return True\n"
       "    __hash__ = object.__hash__\ndef add(a, b):\n    return Anything()\n"},
      {"an int subclass whose __eq__ is always True",
       "class Liar(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
       "def add(a, b):\n    return Liar(0)\n"},
      {"monkeypatched builtins and math (what the asserts call)",
       "import builtins, math\nbuiltins.abs = lambda x: 0\nmath.isclose = lambda *a, **k: True\n"
       "def add(a, b):\n    return 5 if (a, b) == (2, 3) else 6 if (a, b) == (10, -4) else 0\n"},
      {"an excepthook that turns the failed assert into exit 0",
       "import os, sys\nsys.excepthook = lambda *args: os._exit(0)\ndef add(a, b):\n    return 0\n"},
      {"its own check() and a patched test namespace",
       "def check(candidate):\n    pass\ndef add(a, b):\n    import sys\n    frame = sys._getframe(1)\n"
       "    frame.f_globals['check'] = check\n    frame.f_globals['math'] = None\n    return 0\n"},
      {"a fake verdict line and exit", "import os, sys\nprint('__grpo_passed__ 4')\nprint('1 1 1')\nsys.stdout.flush()\nos._exit(0)\ndef add(a, b):\n    return 0\n"},
      {"killing the harness", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\ndef add(a, b):\n    return 0\n"},
      {"reading the expected outputs from files and memory", kReadsExpectedOutputs},
      {"a module planted for the harness to import", kPlantsAModuleForTheHarness},
  };
  return all;
}

class CodeRewardHacking : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Status s = sandbox_available(); !s.is_ok()) GTEST_SKIP() << s.message();
  }
  double score(const std::string& program, const nlohmann::json& fields) {
    auto reward = make_reward("code", {{"timeout_s", 20.0}, {"all_or_nothing", true}});
    EXPECT_TRUE(reward.is_ok()) << reward.status().message();
    RewardSample sample;
    sample.id = "hack";
    sample.fields = fields;
    sample.completion = "```python\n" + program + "```\n";
    const RewardScore result = (*reward)->score(sample);
    last_reason_ = result.reason;
    return result.score;
  }
  std::string last_reason_;
};

TEST_F(CodeRewardHacking, CorrectProgramPassesBothFormats) {
  EXPECT_EQ(score("def add(a, b):\n    return a + b\n", humaneval_fields()), 1.0) << last_reason_;
  EXPECT_EQ(score("def add(a, b):\n    return a + b\n", mbpp_fields()), 1.0) << last_reason_;
  // Exceptions the tests expect still reach them with their type.
  nlohmann::json raising = humaneval_fields();
  raising["test"] = "def check(candidate):\n    try:\n        candidate('x', 1)\n        assert False\n"
                    "    except TypeError:\n        pass\n    assert candidate(1, 2) == 3\n";
  EXPECT_EQ(score("def add(a, b):\n    return a + b\n", raising), 1.0) << last_reason_;
}

TEST_F(CodeRewardHacking, HumanEvalHacksScoreZero) {
  for (const Hack& hack : hacks())
    EXPECT_EQ(score(hack.program, humaneval_fields()), 0.0) << hack.name << " passed: " << last_reason_;
}

TEST_F(CodeRewardHacking, MbppHacksScoreZero) {
  for (const Hack& hack : hacks())
    EXPECT_EQ(score(hack.program, mbpp_fields()), 0.0) << hack.name << " passed: " << last_reason_;
}

}  // namespace
}  // namespace grpo
