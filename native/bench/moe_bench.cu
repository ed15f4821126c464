// SPDX-License-Identifier: Apache-2.0
// CUDA benchmark of the routing kernels against "floor" kernels that only move the bytes an op must
// move: live floor reads the logits once and writes idx + weights; replay floor reads idx and the k
// replayed logits and writes idx + weights; backward floor reads idx + dW and writes dL [T, E].
// Timing: CUDA events around each call, median over many calls; inputs rotate over buffers whose
// total exceeds L2 (>= 256 MB), so every call reads from HBM. Each floor runs in the same process,
// right after the operation it bounds, on the same buffers. T = 64 is the decode row. The predicted
// ratios are in docs/cuda-design.md.
//
//   moe_bench [--iters N] [--quick] [--tiny]
//
// --tiny: a few calls at small T over a small arena, with every routed row checked (k distinct experts
// in range); the SIMT harness runs it (SimtHarnessTest) so that this program's logic is exercised on
// every build. Its timings mean nothing.
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "bench_common.h"
#include "moe_router.h"

namespace {

constexpr size_t kArenaBytes = 256ull << 20;
constexpr size_t kTinyArenaBytes = 4ull << 20;

// Every row of idx [T, k] holds k distinct experts in [0, E): what a routing call must write.
bool rows_valid(const int32_t* d_idx, int64_t T, int k, int E) {
  std::vector<int32_t> h((size_t)T * k);
  CK(cudaMemcpy(h.data(), d_idx, h.size() * 4, cudaMemcpyDeviceToHost));
  std::vector<int> seen(E, -1);
  for (int64_t t = 0; t < T; ++t)
    for (int j = 0; j < k; ++j) {
      const int32_t e = h[t * k + j];
      if (e < 0 || e >= E || seen[e] == (int)t) {
        fprintf(stderr, "moe_bench: row %lld entry %d holds %d (E = %d, k = %d)\n", (long long)t, j, e, E, k);
        return false;
      }
      seen[e] = (int)t;
    }
  return true;
}

// Live floor: a warp per token reads the row (16-byte loads) and writes k indices and weights
// derived from it (so nothing is optimised away).
__global__ void floor_live(const uint4* __restrict__ logits, int64_t tokens, int chunks_per_row, int k,
                           int32_t* __restrict__ idx, float* __restrict__ w) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t t = warp; t < tokens; t += warps) {
    unsigned acc = 0;
    const uint4* row = logits + t * chunks_per_row;
    for (int c = lane; c < chunks_per_row; c += 32) {
      uint4 u = __ldg(row + c);
      acc ^= u.x ^ u.y ^ u.z ^ u.w;
    }
    for (int off = 16; off > 0; off >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, off);
    for (int j = lane; j < k; j += 32) {
      idx[t * k + j] = (int32_t)(acc & 1u) + j;
      w[t * k + j] = __uint_as_float((acc & 0x007fffffu) | 0x3f000000u);
    }
  }
}

// Replay floor: a thread per (token, slot) reads the index and that logit, writes idx + weight.
template <typename T>
__global__ void floor_replay(const T* __restrict__ logits, int64_t tokens, int E, int k,
                             const int32_t* __restrict__ rep, int32_t* __restrict__ idx, float* __restrict__ w) {
  const int64_t n = tokens * k;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t t = i / k;
    const int32_t e = __ldg(rep + i);
    const T v = logits[t * E + e];
    float f;
    if (sizeof(T) == 4) {
      memcpy(&f, &v, sizeof f);  // memcpy, not a pointer cast: no strict-aliasing violation
    } else {
      uint16_t h;
      memcpy(&h, &v, sizeof h);
      f = __uint_as_float((uint32_t)h << 16);
    }
    idx[i] = e;
    w[i] = f;
  }
}

// Backward floor: a warp per token writes the dL row (zeros, 16-byte stores) and the k values.
__global__ void floor_backward(int64_t tokens, int E, int k, const int32_t* __restrict__ idx,
                               const float* __restrict__ dw, float* __restrict__ grad) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  for (int64_t t = warp; t < tokens; t += warps) {
    float4* row = reinterpret_cast<float4*>(grad + t * E);
    for (int c = lane; c < E / 4; c += 32) row[c] = make_float4(0.f, 0.f, 0.f, 0.f);
    __syncwarp();
    for (int j = lane; j < k; j += 32) grad[t * E + __ldg(idx + t * k + j)] = __ldg(dw + t * k + j);
  }
}

struct Config {
  const char* name;
  int E, k, score, pre, G, Gk;
  float scale;
  bool bias;
};

struct Timer {
  std::vector<cudaEvent_t> a, b;
  explicit Timer(int n) : a(n), b(n) {
    for (int i = 0; i < n; ++i) {
      CK(cudaEventCreate(&a[i]));
      CK(cudaEventCreate(&b[i]));
    }
  }
  ~Timer() {
    for (size_t i = 0; i < a.size(); ++i) {
      cudaEventDestroy(a[i]);
      cudaEventDestroy(b[i]);
    }
  }
  // Median in microseconds of fn(i) timed per call.
  template <typename F>
  double median_us(int iters, F fn, cudaStream_t s) {
    for (int i = 0; i < 5; ++i) fn(i);  // warm-up
    for (int i = 0; i < iters; ++i) {
      CK(cudaEventRecord(a[i], s));
      fn(i);
      CK(cudaEventRecord(b[i], s));
    }
    CK(cudaStreamSynchronize(s));
    std::vector<double> t(iters);
    for (int i = 0; i < iters; ++i) {
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, a[i], b[i]));
      t[i] = ms * 1000.0;
    }
    std::sort(t.begin(), t.end());
    return t[iters / 2];
  }
};

}  // namespace

int main(int argc, char** argv) {
  int iters = 200;
  bool quick = false, tiny = false;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--iters") && i + 1 < argc)
      iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--quick"))
      quick = true;
    else if (!strcmp(argv[i], "--tiny"))
      tiny = true;
    else {
      fprintf(stderr, "usage: %s [--iters N] [--quick] [--tiny]\n", argv[0]);
      return 2;
    }
  }
  if (quick) iters = std::min(iters, 30);
  if (tiny) iters = 3;
  if (iters < 3) iters = 3;
  const size_t arena_bytes = tiny ? kTinyArenaBytes : kArenaBytes;
  if (moe_cuda_device_count() <= 0) {
    int raw = 0;
    cudaError_t why = cudaGetDeviceCount(&raw);
    fprintf(stderr, "moe_bench: no CUDA device found (cudaGetDeviceCount: %s; this binary uses CUDA runtime %d.%d)\n",
            why == cudaSuccess ? "0 devices" : cudaGetErrorString(why), CUDART_VERSION / 1000, CUDART_VERSION % 1000 / 10);
    return 2;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("moe_bench: %s, %d SMs, L2 %d MB; median of %d calls, inputs rotated over >= %zu MB%s\n", prop.name,
         prop.multiProcessorCount, prop.l2CacheSize >> 20, iters, arena_bytes >> 20,
         tiny ? " (--tiny: a logic check, the timings mean nothing)" : "");

  // The issue-11 table (E64, E128 and E256 grouped at T = 65536, decode at T = 64), softmax pre as in
  // vLLM's topk_softmax and Qwen, and one E of the warp path (257-512).
  const Config configs[] = {
      {"E64 k6 softmax", 64, 6, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"E128 k8 softmax", 128, 8, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"E128 k8 softmax pre", 128, 8, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false},
      {"E256 k8 sigmoid+bias g8/4", 256, 8, MOE_SCORE_SIGMOID, 0, 8, 4, 2.5f, true},
      {"E512 k10 softmax", 512, 10, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
  };
  const std::vector<int64_t> Ts = tiny ? std::vector<int64_t>{1, 64, 300} : std::vector<int64_t>{1, 64, 4096, 65536};
  const int dtypes[] = {MOE_DTYPE_BF16, MOE_DTYPE_F32};
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  Timer timer(iters);
  long long tiny_rows = 0;
  std::mt19937_64 rng(7);

  // Arena of random logits (valid as fp32 and bf16), rotated over.
  std::vector<float> host(arena_bytes / 4);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (auto& x : host) x = nd(rng);
  void* arena = nullptr;
  CK(cudaMalloc(&arena, arena_bytes));
  CK(cudaMemcpy(arena, host.data(), arena_bytes, cudaMemcpyHostToDevice));
  host.clear();
  host.shrink_to_fit();

  printf("\n%-27s %-5s %6s | %9s %9s %6s | %9s %9s %6s | %9s %9s %6s\n", "config", "dtype", "T", "live us",
         "floor us", "ratio", "replay us", "floor us", "ratio", "bwd us", "floor us", "ratio");
  printf("%s\n", std::string(132, '-').c_str());
  for (const Config& c : configs) {
    std::vector<float> bias(c.E);
    for (auto& b : bias) b = nd(rng) * 0.05f;
    moe_router_config cfg{c.E, c.k, c.score, c.pre, c.G, c.Gk, c.scale, c.bias ? bias.data() : nullptr,
                          MOE_NORMALIZE_DEFAULT, MOE_GROUP_TOPK_SUM, MOE_NONFINITE_PROPAGATE, MOE_MINUS_ONE_REJECT};
    moe_router* r = nullptr;
    MK(moe_router_create(&cfg, MOE_BACKEND_CUDA, 0, &r));
    for (int dtype : dtypes)
      for (int64_t T : Ts) {
        const size_t esz = dtype == MOE_DTYPE_F32 ? 4 : 2;
        const size_t lbytes = (size_t)T * c.E * esz;
        const size_t lstride = (lbytes + 255) & ~(size_t)255;
        const int64_t nbuf = std::max<int64_t>(1, (int64_t)(arena_bytes / lstride));
        // replay indices / dW rotated the same way (valid distinct rows)
        const int64_t ibuf = std::min<int64_t>(nbuf, 64);
        const size_t ik = (size_t)T * c.k;
        std::vector<int32_t> hidx(ik * ibuf);
        std::vector<int32_t> perm(c.E);
        for (size_t row = 0; row < (size_t)T * ibuf; ++row) {
          for (int i = 0; i < c.E; ++i) perm[i] = i;
          for (int j = 0; j < c.k; ++j) {
            int m = j + (int)(rng() % (uint64_t)(c.E - j));
            std::swap(perm[j], perm[m]);
            hidx[row * c.k + j] = perm[j];
          }
        }
        int32_t *d_rep, *d_idx;
        float *d_w, *d_dw, *d_grad;
        int64_t* d_nf;
        CK(cudaMalloc(&d_rep, hidx.size() * 4));
        CK(cudaMemcpy(d_rep, hidx.data(), hidx.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&d_idx, ik * 4));
        CK(cudaMalloc(&d_w, ik * 4));
        CK(cudaMalloc(&d_dw, ik * ibuf * 4));
        CK(cudaMemset(d_dw, 0, ik * ibuf * 4));
        CK(cudaMalloc(&d_grad, (size_t)T * c.E * 4));
        CK(cudaMalloc(&d_nf, 8));
        auto L = [&](int i) { return static_cast<const char*>(arena) + (size_t)(i % nbuf) * lstride; };
        auto R = [&](int i) { return d_rep + (size_t)(i % ibuf) * ik; };
        auto DW = [&](int i) { return d_dw + (size_t)(i % ibuf) * ik; };
        const unsigned warps_grid = (unsigned)std::min<int64_t>((T + 7) / 8, (int64_t)prop.multiProcessorCount * 16);
        const unsigned thr_grid =
            (unsigned)std::min<int64_t>(((int64_t)ik + 255) / 256, (int64_t)prop.multiProcessorCount * 16);

        double live = timer.median_us(iters, [&](int i) {
          MK(moe_route(r, L(i), dtype, T, nullptr, nullptr, d_idx, d_w, nullptr, d_nf, s));
        }, s);
        if (tiny) {  // the last live call's rows, before the floor overwrites them
          CK(cudaStreamSynchronize(s));
          if (!rows_valid(d_idx, T, c.k, c.E)) return 1;
          tiny_rows += T;
        }
        double live_floor = timer.median_us(iters, [&](int i) {
          floor_live<<<warps_grid, 256, 0, s>>>(reinterpret_cast<const uint4*>(L(i)), T, (int)(c.E * esz / 16), c.k,
                                                d_idx, d_w);
        }, s);
        double rep = timer.median_us(iters, [&](int i) {
          MK(moe_route(r, L(i), dtype, T, R(i), nullptr, d_idx, d_w, nullptr, d_nf, s));
        }, s);
        if (tiny) {
          CK(cudaStreamSynchronize(s));
          if (!rows_valid(d_idx, T, c.k, c.E)) return 1;
          tiny_rows += T;
        }
        double rep_floor = timer.median_us(iters, [&](int i) {
          if (dtype == MOE_DTYPE_F32)
            floor_replay<float><<<thr_grid, 256, 0, s>>>(reinterpret_cast<const float*>(L(i)), T, c.E, c.k, R(i),
                                                         d_idx, d_w);
          else
            floor_replay<uint16_t><<<thr_grid, 256, 0, s>>>(reinterpret_cast<const uint16_t*>(L(i)), T, c.E, c.k,
                                                            R(i), d_idx, d_w);
        }, s);
        double bwd = timer.median_us(iters, [&](int i) {
          MK(moe_route_backward(r, L(i), dtype, T, R(i), DW(i), nullptr, d_grad, s));
        }, s);
        double bwd_floor = timer.median_us(iters, [&](int i) {
          floor_backward<<<warps_grid, 256, 0, s>>>(T, c.E, c.k, R(i), DW(i), d_grad);
        }, s);
        CK(cudaGetLastError());
        int64_t bad = 0;
        int why = 0;
        MK(moe_router_check_replay(r, &bad, &why));
        printf("%-27s %-5s %6lld | %9.2f %9.2f %6.2f | %9.2f %9.2f %6.2f | %9.2f %9.2f %6.2f\n", c.name,
               dtype == MOE_DTYPE_F32 ? "fp32" : "bf16", (long long)T, live, live_floor, live / live_floor, rep,
               rep_floor, rep / rep_floor, bwd, bwd_floor, bwd / bwd_floor);
        fflush(stdout);
        cudaFree(d_rep);
        cudaFree(d_idx);
        cudaFree(d_w);
        cudaFree(d_dw);
        cudaFree(d_grad);
        cudaFree(d_nf);
      }
    moe_router_destroy(r);
  }
  printf("\nlive = moe_route (fused score/select/weights); replay = moe_route with replay indices (device\n"
         "validation included); bwd = moe_route_backward (validation included). ratio = ours / floor.\n");
  if (tiny) printf("moe_bench: --tiny: %lld routed rows checked\n", tiny_rows);
  cudaFree(arena);
  CK(cudaStreamDestroy(s));
  return 0;
}
