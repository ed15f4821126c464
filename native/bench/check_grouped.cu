// SPDX-License-Identifier: Apache-2.0
// Section "grouped": the group-limited configurations that take the groups-in-registers kernel
// (native/src/cuda/moe_route_grouped_kernel.cu: E <= 256, E and the group size multiples of 32, no
// softmax pre), against the CPU backend bit for bit, with inputs aimed at its edges: group scores tied
// across groups (the lower group must be kept), routing scores tied inside and across groups by the
// bias, the same value held by several lanes of one group (the ballot's multiplicity), NaN/inf rows
// under each non-finite policy, subnormal and huge logits (saturated scores: many equal keys), k > 32,
// absent slots (E < 32 C), rows of -1 routed live, and token counts that leave a warp's 4-token pass
// partly empty.
#include <algorithm>

#include "check_support.h"

namespace check {
namespace {

// Each row: group 0 random on a coarse grid, then every other group an exact copy of group 0 (equal
// group scores under a bias periodic in the group size) or a shuffled copy (equal scores without a
// bias), sometimes with one element nudged; a few rows get a NaN or an infinity.
std::vector<uint8_t> group_copy_logits(std::mt19937_64& rng, int64_t T, int E, int G, int dtype) {
  const int gs = E / G;
  std::vector<float> v((size_t)T * E);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (int64_t t = 0; t < T; ++t) {
    float* row = &v[(size_t)t * E];
    for (int j = 0; j < gs; ++j) row[j] = roundf(nd(rng) * 2.0f) / 2.0f;
    for (int g = 1; g < G; ++g) {
      for (int j = 0; j < gs; ++j) row[g * gs + j] = row[j];
      if (rng() % 2) std::shuffle(row + g * gs, row + (g + 1) * gs, rng);
      if (rng() % 4 == 0) row[g * gs + rng() % gs] += 0.5f;
    }
    const uint64_t r = rng() % 16;
    if (r == 0) row[rng() % E] = nanf("");
    if (r == 1) row[rng() % E] = INFINITY;
    if (r == 2) row[rng() % E] = -INFINITY;
  }
  return to_dtype(v, dtype);
}

// Logits from a pool of extremes: signed zeros, subnormals of each dtype, values where sigmoid
// saturates to 1 or underflows, the largest finite values, mixed with ordinary ones; some rows all
// negative (softmax post's R is the logit: negative group sums).
std::vector<uint8_t> extreme_logits(std::mt19937_64& rng, int64_t T, int E, int dtype) {
  static const float pool[] = {0.0f,    -0.0f,   1e-45f,  -1e-45f, 1e-40f,   -1e-40f, 6e-8f,  -6e-8f,
                               1e-39f,  17.0f,   17.5f,   30.0f,   -88.0f,   -89.0f,  -104.0f, 104.0f,
                               1e30f,   -1e30f,  3e38f,   -3e38f,  65504.0f, -65504.0f, 20.0f, 20.5f};
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> v((size_t)T * E);
  for (auto& x : v) x = rng() % 2 ? pool[rng() % (sizeof pool / sizeof pool[0])] : nd(rng);
  for (int64_t t = 0; t < T; ++t)  // one row in three all negative and spread: negative group sums that differ
    if (rng() % 3 == 0)
      for (int i = 0; i < E; ++i) v[(size_t)t * E + i] = -fabsf(nd(rng)) - 0.5f;
  return to_dtype(v, dtype);
}

}  // namespace

void run_grouped(cudaStream_t stream, bool quick) {
  constexpr int kDefault = MOE_NORMALIZE_DEFAULT, kOn = MOE_NORMALIZE_ON;
  constexpr int kTopk = MOE_GROUP_TOPK_SUM, kTop2 = MOE_GROUP_TOP2_SUM, kMax = MOE_GROUP_MAX;
  constexpr int kProp = MOE_NONFINITE_PROPAGATE, kZero = MOE_NONFINITE_ZERO, kError = MOE_NONFINITE_ERROR;
  constexpr int kReject = MOE_MINUS_ONE_REJECT, kLive = MOE_MINUS_ONE_LIVE, kArange = MOE_MINUS_ONE_ARANGE;
  // Biases: periodic in the group size (copied groups tie), and on a grid of 0.25 (R = S + b ties
  // across experts whose scores differ by a multiple of it, e.g. saturated ones).
  static float periodic32[256], grid256[256], periodic64[256];
  for (int i = 0; i < 256; ++i) {
    periodic32[i] = 0.01f * (float)(i % 32) - 0.1f;
    periodic64[i] = 0.25f * (float)((i % 64) % 5) - 0.5f;
    grid256[i] = 0.25f * (float)((i * 7) % 5);
  }
  auto with_bias = [](Config c, const float* b) {
    c.bias_values = b;
    return c;
  };
  const Config configs[] = {
      // DeepSeek-V3 (E256 k8, 8 groups keep 4, sigmoid + bias) under each group rule
      with_bias(with_options({"grp_sigmoid_bias_E256_k8_g8_4_topk", 256, 8, MOE_SCORE_SIGMOID, 0, 8, 4, 2.5f, true},
                             kDefault, kTopk, kProp, kReject),
                periodic32),
      with_bias(with_options({"grp_sigmoid_bias_E256_k8_g8_4_top2_zero", 256, 8, MOE_SCORE_SIGMOID, 0, 8, 4, 1.0f,
                              true},
                             kOn, kTop2, kZero, kReject),
                grid256),
      with_options({"grp_sigmoid_E256_k8_g8_4_max_error", 256, 8, MOE_SCORE_SIGMOID, 0, 8, 4, 1.0f, false}, kDefault,
                   kMax, kError, kReject),
      // two and four slots per group, per = 3 and 4 terms, k > 32 with 40 terms in one kept group
      with_bias(with_options({"grp_sqrtsoftplus_bias_E128_k6_g2_1_topk", 128, 6, MOE_SCORE_SQRTSOFTPLUS, 0, 2, 1,
                              1.0f, true},
                             kDefault, kTopk, kZero, kReject),
                periodic64),
      with_options({"grp_softmax_post_E256_k8_g4_2_topk", 256, 8, MOE_SCORE_SOFTMAX, 0, 4, 2, 1.0f, false}, kDefault,
                   kTopk, kProp, kReject),
      with_options({"grp_sigmoid_bias_E256_k40_g2_1_topk", 256, 40, MOE_SCORE_SIGMOID, 0, 2, 1, 1.0f, true}, kDefault,
                   kTopk, kProp, kReject),
      // absent slots (6 of 8), small E, rows of -1 routed live and replayed 0..k-1
      with_bias(with_options({"grp_sigmoid_bias_E192_k8_g6_3_top2_live", 192, 8, MOE_SCORE_SIGMOID, 0, 6, 3, 1.0f,
                              true},
                             kDefault, kTop2, kProp, kLive),
                grid256),
      with_options({"grp_sigmoid_bias_E64_k4_g2_1_max_error", 64, 4, MOE_SCORE_SIGMOID, 0, 2, 1, 1.0f, true}, kDefault,
                   kMax, kError, kReject),
      with_options({"grp_sqrtsoftplus_E96_k5_g3_2_arange", 96, 5, MOE_SCORE_SQRTSOFTPLUS, 0, 3, 2, 1.0f, false},
                   kDefault, kTopk, kZero, kArange),
      // groups of 32 not yet above: softmax post, k > 32 on two kept groups (decode: 20 terms per group)
      with_options({"grp_softmax_post_E128_k6_g4_2_top2", 128, 6, MOE_SCORE_SOFTMAX, 0, 4, 2, 1.0f, false}, kDefault,
                   kTop2, kProp, kLive),
      with_bias(with_options({"grp_sigmoid_bias_E256_k40_g8_2_topk", 256, 40, MOE_SCORE_SIGMOID, 0, 8, 2, 1.0f, true},
                             kDefault, kTopk, kZero, kReject),
                grid256),
  };
  std::mt19937_64 rng(20261129);
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  // Above one token per warp of a full wave the kernel routes 4 tokens per warp pass (k <= 8): T a
  // little above it and not a multiple of 4 leaves the last pass partly empty.
  const int64_t T_pass = (int64_t)prop.multiProcessorCount * 16 * 4;
  // Groups of 32 at decode sizes take a block per token (docs/cuda-design.md step 11) while the grid fits
  // one wave (at least one block per SM): T = 5 and one a little above 4 per SM.
  const int64_t T_dec = (int64_t)prop.multiProcessorCount * 4 + 1;
  int index = 0;
  for (const Config& c : configs) {
    const int fails_before = g_failures;
    for (int dtype = 0; dtype < 3; ++dtype) {
      // data: 0 group copies, 1 extremes, 2 NaN/inf rows (make_logits mode 3), 3 ties (mode 1)
      for (int data = 0; data < 4; ++data) {
        // quick: one data kind per dtype in turn, plus the extremes in fp32 (saturated scores tie where the
        // logits differ: the ranking key decides) and NaN/inf rows in bf16 where a policy acts on them
        if (quick && data != (dtype + index) % 4 && !(data == 1 && dtype == 0) &&
            !(data == 2 && c.nonfinite != kProp && dtype == 1))
          continue;
        const int64_t Ts[] = {5, T_dec, 37, T_pass + 1 + (dtype + data) % 3};
        for (int64_t T : Ts) {
          if (quick && T == 37 && data != 0) continue;
          std::vector<uint8_t> logits = data == 0   ? group_copy_logits(rng, T, c.E, c.G, dtype)
                                        : data == 1 ? extreme_logits(rng, T, c.E, dtype)
                                                    : make_logits(rng, T, c.E, dtype, data == 2 ? 3 : 1);
          check_case_logits(c, dtype, T, 10 + data, logits, rng, stream);
        }
      }
    }
    ++index;
    printf("%-36s %s\n", c.name, g_failures == fails_before ? "ok" : "MISMATCH");
    fflush(stdout);
  }
}

}  // namespace check
