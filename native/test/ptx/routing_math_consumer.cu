// SPDX-License-Identifier: Apache-2.0
// A consumer of the public header native/include/moe_routing_math.h: one kernel that calls every one
// of its functions on the device, so that scripts/check-ptx.sh sees all of them compiled with the
// consumer's flags (the library's own kernels instantiate only the per-element ones). Never linked.
#include "moe_routing_math.h"

namespace {

struct RowLoad {
  const void* row;
  int dtype;
  __device__ float operator()(int i) const { return moe::load_logit(row, dtype, i); }
};

__global__ void every_header_function(const void* logits, int dtype, const int32_t* idx, const float* dw,
                                      const float* bias, moe::Params p, float* out, uint64_t* keys) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int E = p.experts, k = p.k;
  RowLoad load{static_cast<const char*>(logits) + (size_t)t * E * (dtype == MOE_DTYPE_F32 ? 4 : 2), dtype};
  float* o = out + (size_t)t * 4 * E;
  const moe::RowSoftmax sm = moe::row_softmax(load, E);
  float w[MOE_MAX_TOPK];
  bool nonfinite = false;
  moe::unscaled_weights(p, load, idx + t * k, &sm, w, nonfinite);
  moe::backward_row(p, load, idx + t * k, w, sm, dw + t * k, o);
  moe::aux_scores_row(p.score_fn, load, E, o + E);
  moe::aux_grad_row(p.score_fn, load, E, o + E, bias, 0.5f, o + 2 * E);
  float lanes[moe::kSumLanes];
  for (int j = 0; j < moe::kSumLanes; ++j) lanes[j] = load(j % E);
  int count = 0;
  for (int i = 0; i < E; ++i) {
    const float l = load(i);
    const float r = moe::routing_score(p, l, i, sm);
    moe::topk_insert(keys + t * k, count, k, moe::rank_key(r, i));
    o[3 * E + i] = moe::score_grad(p.score_fn, l, moe::score_of(p.score_fn, l)) + moe::log1p_det(moe::exp_det(l)) +
                   moe::sqrtsoftplus_det(l) + moe::sigmoid_det(l) + (float)moe::score_key(r);
  }
  out[0] = moe::group_score_from_sorted(keys + t * k, count, o) + moe::fold_lanes(lanes) +
           (float)moe::check_replay_row(idx + t * k, k, E) + (nonfinite ? 1.0f : 0.0f);
}

}  // namespace

// Referenced so that the kernel is emitted.
void* routing_math_consumer_kernel() { return reinterpret_cast<void*>(&every_header_function); }
