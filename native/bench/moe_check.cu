// SPDX-License-Identifier: Apache-2.0
// GPU self-check without Java: the CUDA backend against the native CPU backend through the C ABI
// (MOE_BACKEND_CPU vs MOE_BACKEND_CUDA routers). Built by nvcc for a GPU, and by the SIMT harness
// (native/test/simt) for the CPU, where every commit runs it. Sections:
//   sweep        random inputs (ties, NaN/Inf rows, wide values), live, replay (full, masked, in place),
//                backward, device-pointer and host-staging paths, for 19 configurations
//   invalid      invalid replay rows (device and host paths), masked-out bad rows
//   graph        CUDA-graph capture and replay; agreement: the device routing agreement
//   goldens      the float64 reference cases (--goldens DIR, repeatable), check_goldens.cu
//   edges        T = 0, signed zeros, NaN/inf rows, subnormals, E = 1..4096, k = E, 64 groups
//   concurrency  threads, streams, destroyed streams, graph launches, error state (check_concurrency.cu)
// Indices, weights and gradients must be bit-identical to the CPU backend (NaN matches any NaN).
// Exit status 0 = pass, 1 = mismatch, 2 = no device or bad usage.
//
//   moe_check [--quick] [--seed N] [--verbose] [--goldens DIR]... [--only SECTION[,SECTION...]]

#include "check_support.h"

using namespace check;

namespace {

// Invalid replay rows: device calls write nothing and report through check_replay; host calls
// fail at once with the CPU backend's message; masked-out bad rows are accepted.
void check_invalid(const Config& c, std::mt19937_64& rng, cudaStream_t stream) {
  Routers r(c, rng);
  const int64_t T = 300;
  const int E = c.E, k = c.k;
  std::vector<uint8_t> logits = make_logits(rng, T, E, MOE_DTYPE_F32, 0);
  std::vector<int32_t> rep = random_replay(rng, T, E, k);
  const int64_t dup_row = 123, oor_row = 200;
  if (k >= 2) rep[dup_row * k + k - 1] = rep[dup_row * k];
  rep[oor_row * k] = E;  // out of range
  const int64_t first = k >= 2 ? dup_row : oor_row;
  const int first_reason = k >= 2 ? MOE_REPLAY_DUPLICATE : MOE_REPLAY_OUT_OF_RANGE;
  DBuf<uint8_t> d_logits(logits.size());
  d_logits.up(logits.data());
  DBuf<int32_t> d_rep(rep.size()), d_idx(rep.size());
  DBuf<float> d_w(rep.size()), d_grad((size_t)T * E), d_dw(rep.size());
  DBuf<int64_t> d_nf(1);
  d_rep.up(rep.data());
  d_idx.poison();
  d_w.poison();
  d_nf.poison();
  d_grad.poison();
  CK(cudaMemset(d_dw.p, 0, rep.size() * 4));
  CK(cudaDeviceSynchronize());  // cudaMemset is asynchronous; the legacy stream does not order `stream`
  ++g_checks;
  MK(moe_route(r.gpu, d_logits.p, MOE_DTYPE_F32, T, d_rep.p, nullptr, d_idx.p, d_w.p, nullptr, d_nf.p, stream));
  MK(moe_route_backward(r.gpu, d_logits.p, MOE_DTYPE_F32, T, d_rep.p, d_dw.p, nullptr, d_grad.p, stream));
  CK(cudaStreamSynchronize(stream));
  for (int32_t v : d_idx.down())
    if (v != -1) {
      failf("%s invalid replay: device wrote indices of a rejected call", c.name);
      break;
    }
  for (float v : d_w.down())
    if (fbits(v) != 0xffffffffu) {
      failf("%s invalid replay: device wrote weights of a rejected call", c.name);
      break;
    }
  for (float v : d_grad.down())
    if (fbits(v) != 0xffffffffu) {
      failf("%s invalid backward: device wrote gradients of a rejected call", c.name);
      break;
    }
  if (d_nf.down()[0] != -1) failf("%s invalid replay: device wrote the non-finite count", c.name);
  int64_t bad_row = -5;
  int reason = -5;
  int st = moe_router_check_replay(r.gpu, &bad_row, &reason);
  if (st != MOE_ERR_INVALID_REPLAY || bad_row != first || reason != first_reason)
    failf("%s check_replay: status %d row %lld reason %d, expected %d row %lld reason %d (%s)", c.name, st,
          (long long)bad_row, reason, MOE_ERR_INVALID_REPLAY, (long long)first, first_reason,
          moe_last_error_message());
  else if (g_verbose)
    printf("  ok  %s device rejection: %s\n", c.name, moe_last_error_message());
  if (moe_router_check_replay(r.gpu, &bad_row, &reason) != MOE_OK)
    failf("%s check_replay did not reset after reporting", c.name);
  // host path: immediate error, outputs untouched
  std::vector<int32_t> hi(rep.size(), -7);
  std::vector<float> hw(rep.size(), -1.0f);
  int64_t nf = -3;
  st = moe_route_host(r.gpu, logits.data(), MOE_DTYPE_F32, T, rep.data(), nullptr, hi.data(), hw.data(), nullptr, &nf);
  char expect[64];
  snprintf(expect, sizeof expect, "row %lld", (long long)first);
  if (st != MOE_ERR_INVALID_REPLAY || !strstr(moe_last_error_message(), expect))
    failf("%s host replay: status %d message '%s', expected INVALID_REPLAY naming %s", c.name, st,
          moe_last_error_message(), expect);
  for (size_t i = 0; i < hi.size(); ++i)
    if (hi[i] != -7 || hw[i] != -1.0f || nf != -3) {
      failf("%s host replay: a rejected call wrote outputs", c.name);
      break;
    }
  // masked-out bad rows are accepted
  std::vector<uint8_t> mask((size_t)T, 1);
  mask[dup_row] = 0;
  mask[oor_row] = 0;
  DBuf<uint8_t> d_mask((size_t)T);
  d_mask.up(mask.data());
  MK(moe_route(r.gpu, d_logits.p, MOE_DTYPE_F32, T, d_rep.p, d_mask.p, d_idx.p, d_w.p, nullptr, d_nf.p, stream));
  CK(cudaStreamSynchronize(stream));
  if (moe_router_check_replay(r.gpu, &bad_row, &reason) != MOE_OK)
    failf("%s masked-out bad rows were rejected (row %lld)", c.name, (long long)bad_row);
  std::vector<int32_t> ci(rep.size());
  std::vector<float> cw(rep.size());
  int64_t cnf = 0;
  MK(moe_route(r.cpu, logits.data(), MOE_DTYPE_F32, T, rep.data(), mask.data(), ci.data(), cw.data(), nullptr, &cnf, nullptr));
  compare_route(std::string(c.name) + " masked bad rows", T, k, ci, cw, cnf, d_idx.down(), d_w.down(), d_nf.down()[0]);
}

// The device-pointer calls captured into a CUDA graph (no allocation, copy or sync inside).
void check_graph(const Config& c, std::mt19937_64& rng) {
  Routers r(c, rng);
  const int64_t T = 1000;
  const int E = c.E, k = c.k;
  std::vector<uint8_t> logits = make_logits(rng, T, E, MOE_DTYPE_BF16, 1);
  std::vector<int32_t> rep = random_replay(rng, T, E, k);
  std::vector<float> dw((size_t)T * k, 0.25f);
  DBuf<uint8_t> d_logits(logits.size());
  d_logits.up(logits.data());
  DBuf<int32_t> d_rep(rep.size()), d_idx(rep.size()), d_idx2(rep.size());
  DBuf<float> d_w(rep.size()), d_w2(rep.size()), d_dw(dw.size()), d_grad((size_t)T * E);
  DBuf<int64_t> d_nf(1), d_nf2(1);
  d_rep.up(rep.data());
  d_dw.up(dw.data());
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ++g_checks;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  int s1 = moe_route(r.gpu, d_logits.p, MOE_DTYPE_BF16, T, nullptr, nullptr, d_idx.p, d_w.p, nullptr, d_nf.p, s);
  int s2 = moe_route(r.gpu, d_logits.p, MOE_DTYPE_BF16, T, d_rep.p, nullptr, d_idx2.p, d_w2.p, nullptr, d_nf2.p, s);
  int s3 = moe_route_backward(r.gpu, d_logits.p, MOE_DTYPE_BF16, T, d_rep.p, d_dw.p, nullptr, d_grad.p, s);
  cudaError_t ce = cudaStreamEndCapture(s, &graph);
  if (s1 != MOE_OK || s2 != MOE_OK || s3 != MOE_OK || ce != cudaSuccess) {
    failf("%s graph capture failed: %d %d %d %s (%s)", c.name, s1, s2, s3, cudaGetErrorString(ce),
          moe_last_error_message());
    cudaGetLastError();
    cudaStreamDestroy(s);
    return;
  }
  CK(cudaGraphInstantiate(&exec, graph, 0));
  d_idx.poison();
  d_w.poison();
  d_idx2.poison();
  d_w2.poison();
  d_grad.poison();
  CK(cudaGraphLaunch(exec, s));
  CK(cudaGraphLaunch(exec, s));
  CK(cudaStreamSynchronize(s));
  std::vector<int32_t> ci(rep.size()), ci2(rep.size());
  std::vector<float> cw(rep.size()), cw2(rep.size()), cg((size_t)T * E);
  int64_t cnf = 0, cnf2 = 0;
  MK(moe_route(r.cpu, logits.data(), MOE_DTYPE_BF16, T, nullptr, nullptr, ci.data(), cw.data(), nullptr, &cnf, nullptr));
  MK(moe_route(r.cpu, logits.data(), MOE_DTYPE_BF16, T, rep.data(), nullptr, ci2.data(), cw2.data(), nullptr, &cnf2, nullptr));
  MK(moe_route_backward(r.cpu, logits.data(), MOE_DTYPE_BF16, T, rep.data(), dw.data(), nullptr, cg.data(), nullptr));
  compare_route(std::string(c.name) + " graph live", T, k, ci, cw, cnf, d_idx.down(), d_w.down(), d_nf.down()[0]);
  compare_route(std::string(c.name) + " graph replay", T, k, ci2, cw2, cnf2, d_idx2.down(), d_w2.down(),
                d_nf2.down()[0]);
  compare_grad(std::string(c.name) + " graph backward", cg, d_grad.down());
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
}

void check_agreement(std::mt19937_64& rng, cudaStream_t stream) {
  const int64_t rows = 5000;
  const int k = 8, E = 64;
  const int64_t stride = 10;
  std::vector<int32_t> a((size_t)rows * stride), b((size_t)rows * stride);
  std::vector<int32_t> ra = random_replay(rng, rows, E, k), rb = random_replay(rng, rows, E, k);
  for (int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < k; ++j) {
      a[r * stride + j] = ra[r * k + j];
      b[r * stride + j] = rng() % 2 ? ra[r * k + (j + 3) % k] : rb[r * k + j];  // some rows equal as sets
    }
  for (int64_t r = 0; r < rows; ++r) {  // make rows distinct again where the mix duplicated
    std::vector<int> seen(E, 0);
    bool dup = false;
    for (int j = 0; j < k; ++j) dup |= seen[b[r * stride + j]]++ > 0;
    if (dup)
      for (int j = 0; j < k; ++j) b[r * stride + j] = rb[r * k + j];
  }
  int64_t hd = 0, ho = 0;
  std::vector<uint8_t> hrow(rows);
  MK(moe_routing_agreement(a.data(), b.data(), rows, k, stride, E, &hd, &ho, hrow.data()));
  DBuf<int32_t> da(a.size()), db(b.size());
  DBuf<int64_t> dout(2);
  DBuf<uint8_t> drow(rows);
  da.up(a.data());
  db.up(b.data());
  ++g_checks;
  MK(moe_routing_agreement_device(da.p, db.p, rows, k, stride, E, dout.p, drow.p, stream));
  CK(cudaStreamSynchronize(stream));
  std::vector<int64_t> o = dout.down();
  if (o[0] != hd || o[1] != ho || drow.down() != hrow)
    failf("routing agreement: device (%lld, %lld) host (%lld, %lld)", (long long)o[0], (long long)o[1], (long long)hd,
          (long long)ho);
}


}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  uint64_t seed = 20240611;
  std::vector<std::string> goldens;
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--quick"))
      quick = true;
    else if (!strcmp(argv[i], "--verbose"))
      g_verbose = true;
    else if (!strcmp(argv[i], "--seed") && i + 1 < argc)
      seed = strtoull(argv[++i], nullptr, 10);
    else if (!strcmp(argv[i], "--goldens") && i + 1 < argc)
      goldens.push_back(argv[++i]);
    else if (!strcmp(argv[i], "--only") && i + 1 < argc)
      only = std::string(",") + argv[++i] + ",";
    else {
      fprintf(stderr,
              "usage: %s [--quick] [--seed N] [--verbose] [--goldens DIR]... [--only SECTION,...]\n"
              "sections: sweep, invalid, graph, agreement, goldens, edges, concurrency\n",
              argv[0]);
      return 2;
    }
  }
  auto run = [&](const char* section) { return only.empty() || only.find(std::string(",") + section + ",") != std::string::npos; };
  if (!moe_cuda_compiled()) {
    fprintf(stderr, "moe_check: library built without CUDA\n");
    return 2;
  }
  int n = moe_cuda_device_count();
  if (n <= 0) {
    int raw = 0, driver = 0;
    cudaError_t why = cudaGetDeviceCount(&raw);
    cudaDriverGetVersion(&driver);
    fprintf(stderr,
            "moe_check: no CUDA device found (cudaGetDeviceCount: %s). This binary uses CUDA runtime %d.%d; the "
            "driver supports CUDA %d.%d%s\n",
            why == cudaSuccess ? "0 devices" : cudaGetErrorString(why), CUDART_VERSION / 1000,
            CUDART_VERSION % 1000 / 10, driver / 1000, driver % 1000 / 10,
            driver == 0 ? " (no driver loaded)"
                        : driver < CUDART_VERSION ? ": the driver is older than the runtime, update it" : "");
    return 2;
  }
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  printf("moe_check: device 0: %s (sm_%d%d, %d SMs), seed %llu%s\n", prop.name, prop.major, prop.minor,
         prop.multiProcessorCount, (unsigned long long)seed, quick ? ", quick" : "");

  const Config configs[] = {
      // name, E, k, score, pre, G, Gk, scale, bias
      {"softmax_post_E8_k2", 8, 2, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E64_k6", 64, 6, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E128_k8", 128, 8, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E160_k6_scale", 160, 6, MOE_SCORE_SOFTMAX, 0, 0, 0, 2.0f, false},
      {"softmax_post_E100_k7", 100, 7, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E512_k10", 512, 10, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E600_k40", 600, 40, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_post_E4096_k64", 4096, 64, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
      {"softmax_pre_E64_k6", 64, 6, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false},
      {"softmax_pre_E2047_k16", 2047, 16, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.5f, false},
      {"softmax_pre_grouped_E96_k6", 96, 6, MOE_SCORE_SOFTMAX, 1, 8, 3, 1.0f, false},
      {"sigmoid_k1_E16", 16, 1, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false},
      {"sigmoid_E64_k4", 64, 4, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false},
      {"sigmoid_E33_k33", 33, 33, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false},
      {"sigmoid_bias_E96_k8_group4_2", 96, 8, MOE_SCORE_SIGMOID, 0, 4, 2, 1.0f, true},
      {"sigmoid_bias_group_E256_k8", 256, 8, MOE_SCORE_SIGMOID, 0, 8, 4, 2.5f, true},
      {"sigmoid_bias_group_E1000_k12", 1000, 12, MOE_SCORE_SIGMOID, 0, 10, 4, 1.0f, true},
      {"sigmoid_bias_group_E4096_k8_g64", 4096, 8, MOE_SCORE_SIGMOID, 0, 64, 8, 2.5f, true},
      {"sigmoid_group_E384_k8_g48", 384, 8, MOE_SCORE_SIGMOID, 0, 48, 2, 1.0f, false},
  };
  std::mt19937_64 rng(seed);
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const int64_t Ts_full[] = {1, 37, 1000};
  const int64_t Ts_quick[] = {1, 37};
  for (const Config& c : configs) {
    if (!run("sweep") && !run("invalid")) break;
    const int fails_before = g_failures;
    const long long big = (long long)c.E >= 2048 ? 1 : 0;
    if (run("sweep"))
      for (int dtype = 0; dtype < 3; ++dtype)
        for (int mode = 0; mode < 4; ++mode) {
          if (quick && mode != (dtype + 1) % 4) continue;
          const int64_t* Ts = quick ? Ts_quick : Ts_full;
          const int nT = quick ? 2 : 3;
          for (int ti = 0; ti < nT; ++ti) {
            int64_t T = Ts[ti];
            if (big && T > 100) T = 200;
            check_case(c, dtype, T, mode, rng, stream);
          }
        }
    if (run("invalid")) check_invalid(c, rng, stream);
    printf("%-36s %s\n", c.name, g_failures == fails_before ? "ok" : "MISMATCH");
    fflush(stdout);
  }
  if (run("graph")) {
    check_graph(configs[15], rng);
    check_graph(configs[9], rng);
  }
  if (run("agreement")) check_agreement(rng, stream);
  if (run("goldens") && !goldens.empty()) run_goldens(goldens, stream);
  if (run("edges")) run_edges(stream, quick);
  if (run("concurrency")) run_concurrency(quick);
  CK(cudaStreamDestroy(stream));
  CK(cudaDeviceSynchronize());
#ifdef MOE_SIMT
  const std::string where = std::string("in order ") + simt::order_name() + " (SIMT host emulation, " +
                            std::to_string(simt::sm_count()) + " SMs)";
#else
  const std::string where = std::string("on ") + prop.name;
#endif
  if (g_failures) {
    printf("CUDA kernels: %d of %d checks FAILED %s\n", g_failures, g_checks, where.c_str());
    printf("moe_check: FAIL\n");
    return 1;
  }
  printf("CUDA kernels: %d checks passed %s\n", g_checks, where.c_str());
  printf("moe_check: PASS\n");
  return 0;
}
