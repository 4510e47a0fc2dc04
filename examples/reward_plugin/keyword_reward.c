/* An example reward plugin in plain C (rewards/plugin_abi.h): scores 1 when the completion
 * contains the keyword given in its options, and reports how many times it appears.
 *
 *   reward:
 *     functions:
 *       - name: plugin
 *         options: {path: build/examples/libkeyword_reward.so, options: {keyword: "\\boxed"}}
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rewards/plugin_abi.h"

typedef struct keyword_state {
  char keyword[256];
} keyword_state;

/* Reads the string value of "keyword" from a flat JSON object (enough for this example; a real
 * plugin would use a JSON library). */
static int read_keyword(const char* json, char* out, size_t size) {
  const char* key = strstr(json, "\"keyword\"");
  if (key == NULL) return 0;
  const char* open = strchr(key + 9, '"');
  if (open == NULL) return 0;
  size_t n = 0;
  for (const char* p = open + 1; *p && *p != '"' && n + 1 < size; ++p) {
    if (*p == '\\' && p[1]) ++p; /* keep the escaped character */
    out[n++] = *p;
  }
  out[n] = '\0';
  return n > 0;
}

static void* keyword_create(const char* options_json, char* error, size_t error_size) {
  keyword_state* state = calloc(1, sizeof *state);
  if (state == NULL || !read_keyword(options_json, state->keyword, sizeof state->keyword)) {
    snprintf(error, error_size, "option 'keyword' (a non-empty string) is required");
    free(state);
    return NULL;
  }
  return state;
}

static int keyword_score(void* opaque, const grpo_reward_sample_v1* sample, grpo_reward_result_v1* result) {
  const keyword_state* state = opaque;
  if (sample->completion == NULL) {
    snprintf(result->error, sizeof result->error, "sample %s has no completion", sample->id);
    return 1;
  }
  int hits = 0;
  const size_t length = strlen(state->keyword);
  for (const char* p = strstr(sample->completion, state->keyword); p != NULL; p = strstr(p + length, state->keyword)) ++hits;
  result->score = hits > 0 ? 1.0 : 0.0;
  snprintf(result->components_json, sizeof result->components_json, "{\"hits\": %d}", hits);
  snprintf(result->reason, sizeof result->reason, "'%s' found %d times", state->keyword, hits);
  return 0;
}

static void keyword_destroy(void* state) { free(state); }

static const grpo_reward_plugin_v1 kPlugin = {
    GRPO_REWARD_ABI_VERSION, sizeof(grpo_reward_plugin_v1), "keyword", keyword_create, keyword_score, keyword_destroy,
};

const grpo_reward_plugin_v1* grpo_reward_v1(void) { return &kPlugin; }
