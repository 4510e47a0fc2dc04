/* grpo-cpp reward plugin ABI, version 1. A plain C header: a plugin is any shared library that
 * exports `grpo_reward_v1`, built with any compiler. grpo-cpp loads it with dlopen when a config
 * names it:
 *
 *   reward:
 *     functions:
 *       - name: plugin
 *         options: {path: build/examples/libkeyword_reward.so, options: {keyword: "42"}}
 *
 * Rules: strings are UTF-8 and NUL-terminated; everything passed in is owned by grpo-cpp and
 * valid only during the call. grpo-cpp runs the plugin in a worker process of its own (forked,
 * one per plugin): calls come one at a time; a call that runs past the plugin's timeout_s, a
 * crash or a call to exit() kills the worker, fails that sample and starts a fresh worker (create
 * runs again).
 * The struct only grows: fields are appended, struct_size says how many the plugin knows. */
#ifndef GRPO_REWARD_PLUGIN_ABI_H_
#define GRPO_REWARD_PLUGIN_ABI_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GRPO_REWARD_ABI_VERSION 1

typedef struct grpo_reward_sample_v1 {
  const char* id;           /* names the sample in logs */
  const char* prompt;
  const char* completion;
  const char* fields_json;  /* dataset fields as a JSON object: gold answer, tests, ... */
  int64_t completion_tokens; /* -1 when unknown */
} grpo_reward_sample_v1;

typedef struct grpo_reward_result_v1 {
  double score;
  char components_json[1024]; /* optional JSON object of named parts, e.g. {"hits": 2}; "" for none */
  char reason[256];           /* optional short explanation */
  char error[256];            /* set it and return nonzero when the sample cannot be scored */
} grpo_reward_result_v1;

typedef struct grpo_reward_plugin_v1 {
  uint32_t abi_version;  /* GRPO_REWARD_ABI_VERSION */
  uint32_t struct_size;  /* sizeof(grpo_reward_plugin_v1) */
  const char* name;
  /* Builds the plugin's state from its options (a JSON object). On failure returns NULL and
   * writes a message into error (error_size bytes). */
  void* (*create)(const char* options_json, char* error, size_t error_size);
  /* Scores one sample into *result (zeroed by the caller). Returns 0, or nonzero with
   * result->error set. */
  int (*score)(void* state, const grpo_reward_sample_v1* sample, grpo_reward_result_v1* result);
  void (*destroy)(void* state);
} grpo_reward_plugin_v1;

/* The one symbol a plugin exports. */
typedef const grpo_reward_plugin_v1* (*grpo_reward_entry_v1)(void);

#ifdef __cplusplus
}
#endif

#endif /* GRPO_REWARD_PLUGIN_ABI_H_ */
