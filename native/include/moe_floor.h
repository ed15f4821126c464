/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Memory floors of the CPU benchmarks (docs/cpu-design.md): the least any router can do, one loop each, shared
 * by the JMH benchmarks' JNI entry points (java/src/main/cpp/moe_jni.h) and native/bench/cpu_bench.cpp so that
 * both measure the same loop. Not part of the routing API.
 * Live: read every logit byte (an OR over 64-bit words, which the compiler vectorises) and write `outs`
 * indices and weights. Replay: read the k logits each replay row names, the row of indices itself, and write
 * the outputs; the same bytes a replay call must touch. Both return a value built from what they read, so
 * that nothing is optimised away.
 */
#ifndef MOE_FLOOR_H
#define MOE_FLOOR_H

#include <stdint.h>
#include <string.h>

static inline int64_t moe_floor_stream(const void* in, int64_t bytes, int32_t* out_idx, float* out_w, int64_t outs) {
  const uint64_t* w = (const uint64_t*)in;
  uint64_t acc = 0;
  for (int64_t i = 0; i < bytes / 8; ++i) acc |= w[i];
  for (int64_t i = 0; i < outs; ++i) {
    out_idx[i] = (int32_t)i;
    out_w[i] = 1.0f;
  }
  return (int64_t)acc;
}

static inline int64_t moe_floor_gather(const float* logits, int64_t tokens, int experts, const int32_t* idx, int k,
                                       int32_t* out_idx, float* out_w) {
  uint32_t acc = 0;
  for (int64_t t = 0; t < tokens; ++t)
    for (int j = 0; j < k; ++j) {
      const int32_t e = idx[t * k + j];
      const float l = logits[t * experts + e];
      uint32_t b;
      memcpy(&b, &l, 4);
      acc |= b;
      out_idx[t * k + j] = e;
      out_w[t * k + j] = l;
    }
  return (int64_t)acc;
}

#endif
