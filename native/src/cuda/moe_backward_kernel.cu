// SPDX-License-Identifier: Apache-2.0
// Backward of the weights (spec section 5): grad_logits [T, E] from grad_weights [T, k].
// A team per token (a warp for E <= 512, a 256-thread block above) builds the output row in shared
// memory (zeros, or -P * dot for pre-softmax), scatters the k selected values, then writes the
// whole row with 16-byte stores when aligned, so every element is written exactly once.
// Arithmetic follows moe::backward_row / moe::unscaled_weights: per-expert terms elementwise, the
// k-term sums (dots, normalisers) sequential in j, the pre-softmax statistics canonical; every
// score (softmax post and pre, sigmoid, sqrtsoftplus) with or without normalisation. Non-finite
// policy ZERO: rows flagged by the forward, or reading a non-finite logit here (the whole row for
// softmax pre, the k selected ones otherwise), get an all-zero row.
#include <atomic>

#include "moe_cuda_common.cuh"

namespace moe {
namespace {

constexpr int kWarpTeamsPerBlock = 4;
constexpr int kBlockTeamWarps = 8;
constexpr int kWarpPathMaxExperts = 512;

template <int DT, int TW>
__global__ void __launch_bounds__(TW == 1 ? 32 * kWarpTeamsPerBlock : 32 * TW)
    backward_kernel(Params p, const void* __restrict__ logits, int64_t tokens, const int32_t* __restrict__ idx,
                    const float* __restrict__ grad_w, const uint8_t* __restrict__ flags,
                    float* __restrict__ grad_logits, int vec_in, int vec_out,
                    const unsigned long long* __restrict__ call_bad) {
  using TeamT = dev::Team<TW>;
  constexpr int N = TeamT::N;
  constexpr int kTeams = TW == 1 ? kWarpTeamsPerBlock : 1;
  __shared__ typename TeamT::Shared sh_all[kTeams];
  extern __shared__ float4 dyn_smem[];

  if (call_bad && *call_bad != kNoBadRow) return;

  const int E = p.experts, k = p.k;
  const int epad = (E + 3) & ~3;
  const int team = TeamT::team(), tid = TeamT::tid(), lane = threadIdx.x & 31;
  const bool warp0 = TeamT::warp0();
  typename TeamT::Shared* sh = &sh_all[team];
  float* buf = reinterpret_cast<float*>(dyn_smem) + (size_t)team * epad;
  const bool pre = p.score_fn == MOE_SCORE_SOFTMAX && p.pre_softmax;
  const bool zero_nonfinite = p.nonfinite == MOE_NONFINITE_ZERO;
  const size_t row_bytes = (size_t)E * dtype_bytes(DT);

  for (int64_t t = (int64_t)blockIdx.x * kTeams + team; t < tokens; t += (int64_t)gridDim.x * kTeams) {
    const void* row = static_cast<const char*>(logits) + (size_t)t * row_bytes;
    float* out = grad_logits + (size_t)t * E;
    const bool v0 = warp0 && lane < k, v1 = warp0 && lane + 32 < k;
    const int e0 = v0 ? idx[t * k + lane] : 0, e1 = v1 ? idx[t * k + lane + 32] : 0;
    const float g0 = v0 ? mul_rn(p.scale, grad_w[t * k + lane]) : 0.0f;  // g = scale * dw
    const float g1 = v1 ? mul_rn(p.scale, grad_w[t * k + lane + 32]) : 0.0f;
    // ZERO: a row the forward flagged (it read the whole row when live) or whose logits read here
    // are non-finite gets a zero gradient. Team-uniform.
    bool zero = zero_nonfinite && flags[t] != 0;
    float val0 = 0.0f, val1 = 0.0f;

    if (pre) {
      const bool nf = dev::stage_row<DT>(row, E, vec_in != 0, buf, tid, N);
      if (zero_nonfinite) zero = TeamT::any(nf) || zero;  // a barrier as well
      TeamT::sync();
      const RowSoftmax sm = dev::team_row_softmax<TW>(buf, buf, E, tid, sh);  // buf[i] = exp_det(l_i - max)
      float dot = 0.0f;
      if (warp0) {
        // w = P at idx; normalised: du = (g - sum(g * w)) / (sum(P) + eps), else du = g; then
        // dL = P * (du - sum(P * du)) at idx and -P * sum(P * du) elsewhere (moe::backward_row).
        const float q0 = v0 ? div_rn(buf[e0], sm.sum) : 0.0f, q1 = v1 ? div_rn(buf[e1], sm.sum) : 0.0f;
        float du0 = g0, du1 = g1;
        if (p.normalize) {
          const float z = add_rn(dev::seg_seq_sum<32>(k, q0, q1), kSigmoidNormEps);
          const float w0 = div_rn(q0, z), w1 = div_rn(q1, z);
          const float gw = dev::seg_dot<32>(k, g0, w0, g1, w1);
          du0 = div_rn(sub_rn(g0, gw), z);
          du1 = div_rn(sub_rn(g1, gw), z);
        }
        dot = dev::seg_dot<32>(k, q0, du0, q1, du1);
        val0 = mul_rn(q0, sub_rn(du0, dot));
        val1 = mul_rn(q1, sub_rn(du1, dot));
        if (TW > 1 && lane == 0) sh->bcast = dot;
      }
      TeamT::sync();
      if (TW > 1) dot = sh->bcast;
      if (zero)
        for (int i = tid; i < E; i += N) buf[i] = 0.0f;
      else
        for (int i = tid; i < E; i += N) buf[i] = mul_rn(-div_rn(buf[i], sm.sum), dot);
    } else {
      if (vec_out) {  // 16-byte shared stores: E / 128 per lane (one at E = 128)
        float4* b4 = reinterpret_cast<float4*>(buf);
        for (int c = tid; c < E / 4; c += N) b4[c] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      } else {
        for (int i = tid; i < E; i += N) buf[i] = 0.0f;
      }
      if (warp0) {
        const float l0 = v0 ? dev::load_elem<DT>(row, e0) : 0.0f, l1 = v1 ? dev::load_elem<DT>(row, e1) : 0.0f;
        float u0, u1, w0, w1;
        bool unused_nf = false;
        dev::seg_weights<32, false>(p, lane, l0, l1, 0.0f, 0.0f, u0, u1, w0, w1, unused_nf);
        if (p.post_softmax()) {
          const float dot = dev::seg_dot<32>(k, w0, g0, w1, g1);
          val0 = mul_rn(w0, sub_rn(g0, dot));
          val1 = mul_rn(w1, sub_rn(g1, dot));
        } else {
          // du = (g - sum(g * w)) / (sum(u) + eps) when normalised, else g; dL = du * dS/dL at idx.
          float du0 = g0, du1 = g1;
          if (p.normalize) {
            const float z = add_rn(dev::seg_seq_sum<32>(k, u0, u1), kSigmoidNormEps);
            const float dot = dev::seg_dot<32>(k, g0, w0, g1, w1);
            du0 = div_rn(sub_rn(g0, dot), z);
            du1 = div_rn(sub_rn(g1, dot), z);
          }
          val0 = mul_rn(du0, score_grad(p.score_fn, l0, u0));
          val1 = v1 ? mul_rn(du1, score_grad(p.score_fn, l1, u1)) : 0.0f;
        }
        // Warp 0 alone writes the selected values: its OR over the k logits suffices.
        if (zero_nonfinite && dev::seg_or((v0 && !is_finite(l0)) || (v1 && !is_finite(l1)), 32)) val0 = val1 = 0.0f;
      }
    }
    if (zero) val0 = val1 = 0.0f;
    TeamT::sync();
    if (v0) buf[e0] = val0;
    if (v1) buf[e1] = val1;
    TeamT::sync();
    if (vec_out) {
      float4* o = reinterpret_cast<float4*>(out);
      const float4* b = reinterpret_cast<const float4*>(buf);
      for (int c = tid; c < E / 4; c += N) o[c] = b[c];
    } else {
      for (int i = tid; i < E; i += N) out[i] = buf[i];
    }
    TeamT::sync();
  }
}

// Blocks per SM the backward kernel reaches (asked of the runtime once per instantiation, with the
// largest shared memory of its path: a smaller row only fits more). The grid is that times the SMs:
// one wave, grid-stride over the tokens, no partial last wave (2,112 blocks for 1,320 resident before).
template <int DT, int TW>
int bw_blocks_per_sm() {
  static std::atomic<int> cached{0};
  constexpr int kTeams = TW == 1 ? kWarpTeamsPerBlock : 1;
  constexpr int threads = TW == 1 ? 32 * kWarpTeamsPerBlock : 32 * TW;
  const size_t smem = (size_t)kTeams * (TW == 1 ? kWarpPathMaxExperts : MOE_MAX_EXPERTS) * sizeof(float);
  return blocks_per_sm_cached(cached, backward_kernel<DT, TW>, threads, smem);
}

template <int DT, int TW>
cudaError_t launch_bw_t(const Params& p, const void* logits, int64_t tokens, const int32_t* idx, const float* grad_w,
                        const uint8_t* flags, float* grad_logits, const unsigned long long* call_bad, int sm_count,
                        cudaStream_t stream) {
  constexpr int kTeams = TW == 1 ? kWarpTeamsPerBlock : 1;
  constexpr int threads = TW == 1 ? 32 * kWarpTeamsPerBlock : 32 * TW;
  const int epad = (p.experts + 3) & ~3;
  const size_t smem = (size_t)kTeams * epad * sizeof(float);
  const size_t row_bytes = (size_t)p.experts * dtype_bytes(DT);
  const int vec_in = ((uintptr_t)logits % 16 == 0) && (row_bytes % 16 == 0);
  const int vec_out = ((uintptr_t)grad_logits % 16 == 0) && (p.experts % 4 == 0);
  const unsigned grid = grid_for(tokens, kTeams, sm_count, bw_blocks_per_sm<DT, TW>());
  return launch_kernel(backward_kernel<DT, TW>, grid, threads, smem, stream, p, logits, tokens, idx, grad_w, flags,
                       grad_logits, vec_in, vec_out, call_bad);
}

template <int DT>
cudaError_t launch_bw_dt(const Params& p, const void* logits, int64_t tokens, const int32_t* idx,
                         const float* grad_w, const uint8_t* flags, float* grad_logits,
                         const unsigned long long* call_bad, int sm_count, cudaStream_t stream) {
  if (p.experts <= kWarpPathMaxExperts)
    return launch_bw_t<DT, 1>(p, logits, tokens, idx, grad_w, flags, grad_logits, call_bad, sm_count, stream);
  return launch_bw_t<DT, kBlockTeamWarps>(p, logits, tokens, idx, grad_w, flags, grad_logits, call_bad, sm_count,
                                          stream);
}

}  // namespace

cudaError_t launch_backward(const Params& p, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                            const float* grad_w, const uint8_t* flags, float* grad_logits,
                            const unsigned long long* call_bad, int sm_count, cudaStream_t stream) {
  if (tokens <= 0) return cudaSuccess;
  return with_dtype(dtype, [&](auto dt) {
    return launch_bw_dt<decltype(dt)::value>(p, logits, tokens, idx, grad_w, flags, grad_logits, call_bad, sm_count,
                                             stream);
  });
}

}  // namespace moe
