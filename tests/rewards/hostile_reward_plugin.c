/* A reward plugin that misbehaves on demand, to test that grpo-cpp contains C-ABI plugins:
 * the completion "hang" never returns, "exit" calls exit(0), "crash" writes through a null
 * pointer; anything else scores 0.5. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rewards/plugin_abi.h"

static void* hostile_create(const char* options_json, char* error, size_t error_size) {
  (void)options_json;
  (void)error;
  (void)error_size;
  static int state;
  return &state;
}

static int hostile_score(void* state, const grpo_reward_sample_v1* sample, grpo_reward_result_v1* result) {
  (void)state;
  if (strcmp(sample->completion, "hang") == 0)
    for (;;) pause();
  if (strcmp(sample->completion, "exit") == 0) exit(0);
  if (strcmp(sample->completion, "crash") == 0) {
    volatile int* nowhere = NULL;
    *nowhere = 1;
  }
  result->score = 0.5;
  return 0;
}

static void hostile_destroy(void* state) { (void)state; }

static const grpo_reward_plugin_v1 kPlugin = {
    GRPO_REWARD_ABI_VERSION, sizeof(grpo_reward_plugin_v1), "hostile", hostile_create, hostile_score, hostile_destroy,
};

const grpo_reward_plugin_v1* grpo_reward_v1(void) { return &kPlugin; }
