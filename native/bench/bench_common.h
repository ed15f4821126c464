// SPDX-License-Identifier: Apache-2.0
// Error checks shared by the GPU tools (moe_check, moe_bench): report where and exit(1).
#ifndef MOE_BENCH_COMMON_H_
#define MOE_BENCH_COMMON_H_

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#include "moe_router.h"

#define CK(expr)                                                                                          \
  do {                                                                                                    \
    cudaError_t e_ = (expr);                                                                              \
    if (e_ != cudaSuccess) {                                                                              \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, __LINE__, #expr); \
      exit(1);                                                                                            \
    }                                                                                                     \
  } while (0)

#define MK(expr)                                                                                        \
  do {                                                                                                  \
    int s_ = (expr);                                                                                    \
    if (s_ != MOE_OK) {                                                                                 \
      fprintf(stderr, "moe error %s at %s:%d: %s: %s\n", moe_status_string(s_), __FILE__, __LINE__, #expr, \
              moe_last_error_message());                                                                \
      exit(1);                                                                                          \
    }                                                                                                   \
  } while (0)

#endif  // MOE_BENCH_COMMON_H_
