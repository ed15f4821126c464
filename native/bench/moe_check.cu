// SPDX-License-Identifier: Apache-2.0
// GPU self-check without Java: the CUDA backend against the native CPU backend through the C ABI
// (MOE_BACKEND_CPU vs MOE_BACKEND_CUDA routers). Built by nvcc for a GPU, and by the SIMT harness
// (native/test/simt) for the CPU, where every commit runs it. Sections:
//   sweep        random inputs (ties, NaN/Inf rows, wide and saturated values), live, replay (full,
//                masked, in place, rows of -1), backward, device-pointer and host-staging paths, for the
//                v1 configurations and every option of spec sections 1-5 (scores, bias, normalize,
//                group rules, non-finite policies with per-row flags, -1 rows)
//   invalid      invalid replay rows (device and host paths), -1 rows, masked-out bad rows
//   graph        CUDA-graph capture and replay; agreement: the device routing agreement
//   goldens      the float64 reference cases (--goldens DIR, repeatable), check_goldens.cu
//   edges        T = 0, signed zeros, NaN/inf rows, subnormals, E = 1..4096, k = E, 64 groups
//   grouped      the groups-in-registers kernel's edges (check_grouped.cu)
//   concurrency  threads, streams, destroyed streams, graph launches, error state (check_concurrency.cu)
//   bias         set_bias while other threads route: one bias version per call (check_bias.cu)
// Indices, weights and gradients must be bit-identical to the CPU backend (NaN matches any NaN).
// Exit status 0 = pass, 1 = mismatch, 2 = no device or bad usage.
//
//   moe_check [--quick] [--seed N] [--verbose] [--goldens DIR]... [--only SECTION[,SECTION...]]

#include <algorithm>

#include "check_support.h"

using namespace check;

namespace {

// Invalid replay rows (T: 250 or 300, either side of the one-block validation's 256 rows; the planted
// rows are below 250): device calls write nothing and report through check_replay; host calls
// fail at once with the CPU backend's message; masked-out bad rows are accepted. Rows of -1: all -1
// is invalid under REJECT (valid under LIVE and ARANGE: row 60 then), a row mixing -1 and experts under every policy.
void check_invalid(const Config& c, std::mt19937_64& rng, cudaStream_t stream, int64_t T) {
  Routers r(c, rng);
  const int E = c.E, k = c.k;
  std::vector<uint8_t> logits = make_logits(rng, T, E, MOE_DTYPE_F32, 0);
  std::vector<int32_t> rep = random_replay(rng, T, E, k);
  // A row of -1 is valid under LIVE and ARANGE: the validation (one block or several) must pass over it and
  // report the later bad row, and the valid calls below route it.
  // The backward takes routed indices, where -1 is out of range: it gets the row as drawn.
  const int64_t skipped_minus_row = 60;
  const std::vector<int32_t> drawn = rep;
  if (c.minus_one != MOE_MINUS_ONE_REJECT)
    for (int j = 0; j < k; ++j) rep[skipped_minus_row * k + j] = -1;
  const std::vector<int32_t> rep_ok = rep;
  const int64_t dup_row = 123, oor_row = 200, minus_row = 150;
  if (k >= 2) rep[dup_row * k + k - 1] = rep[dup_row * k];
  rep[oor_row * k] = E;  // out of range
  const bool plant_minus = c.minus_one == MOE_MINUS_ONE_REJECT || k >= 2;
  if (plant_minus)  // all -1 under REJECT, else -1 beside experts
    for (int j = 0; j < (c.minus_one == MOE_MINUS_ONE_REJECT ? k : 1); ++j) rep[minus_row * k + j] = -1;
  int64_t first = oor_row;
  int first_reason = MOE_REPLAY_OUT_OF_RANGE;
  if (plant_minus && minus_row < first) first = minus_row;
  if (k >= 2 && dup_row < first) {
    first = dup_row;
    first_reason = MOE_REPLAY_DUPLICATE;
  }
  DBuf<uint8_t> d_logits(logits.size());
  d_logits.up(logits.data());
  std::vector<int32_t> rep_bw = rep;
  std::copy(drawn.begin() + skipped_minus_row * k, drawn.begin() + (skipped_minus_row + 1) * k,
            rep_bw.begin() + skipped_minus_row * k);
  DBuf<int32_t> d_rep(rep.size()), d_rep_bw(rep.size()), d_idx(rep.size());
  DBuf<float> d_w(rep.size()), d_grad((size_t)T * E), d_dw(rep.size());
  DBuf<int64_t> d_nf(1);
  d_rep.up(rep.data());
  d_rep_bw.up(rep_bw.data());
  d_idx.poison();
  d_w.poison();
  d_nf.poison();
  d_grad.poison();
  DBuf<uint8_t> d_flags((size_t)T);  // no row flagged (ZERO routers need the forward's flags)
  CK(cudaMemset(d_flags.p, 0, (size_t)T));
  CK(cudaMemset(d_dw.p, 0, rep.size() * 4));
  CK(cudaDeviceSynchronize());  // cudaMemset is asynchronous; the legacy stream does not order `stream`
  ++g_checks;
  MK(moe_route(r.gpu, d_logits.p, MOE_DTYPE_F32, T, d_rep.p, nullptr, d_idx.p, d_w.p, nullptr, d_nf.p, stream));
  MK(moe_route_backward(r.gpu, d_logits.p, MOE_DTYPE_F32, T, d_rep_bw.p, d_dw.p, d_flags.p, d_grad.p, stream));
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
  // The rejected call's verdict slot comes back after the router's 32 call slots: valid calls there
  // must reset it, not inherit the rejection.
  {
    DBuf<int32_t> d_ok(rep_ok.size());
    d_ok.up(rep_ok.data());
    std::vector<int32_t> oi(rep_ok.size());
    std::vector<float> ow(rep_ok.size());
    int64_t onf = 0;
    MK(moe_route(r.cpu, logits.data(), MOE_DTYPE_F32, T, rep_ok.data(), nullptr, oi.data(), ow.data(), nullptr, &onf,
                 nullptr));
    const int before = g_failures;
    for (int i = 0; i < 33 && g_failures == before; ++i) {
      d_idx.poison();
      MK(moe_route(r.gpu, d_logits.p, MOE_DTYPE_F32, T, d_ok.p, nullptr, d_idx.p, d_w.p, nullptr, d_nf.p, stream));
      CK(cudaStreamSynchronize(stream));
      compare_route(std::string(c.name) + " valid replay " + std::to_string(i) + " after a rejection", T, k, oi, ow,
                    onf, d_idx.down(), d_w.down(), d_nf.down()[0]);
    }
    if (moe_router_check_replay(r.gpu, &bad_row, &reason) != MOE_OK)
      failf("%s valid replays after a rejection were rejected (row %lld)", c.name, (long long)bad_row);
  }
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
  mask[minus_row] = 0;
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

// The device-pointer calls captured into a CUDA graph (no allocation, copy or sync inside), with the
// per-row flags. Under non-finite policy ERROR the graph also holds a call on logits with a NaN row:
// each launch rejects it (nothing written) and check_replay reports it once.
void check_graph(const Config& c, std::mt19937_64& rng, int mode = 1) {
  Routers r(c, rng);
  const int64_t T = 1000;
  const int E = c.E, k = c.k;
  std::vector<uint8_t> logits = make_logits(rng, T, E, MOE_DTYPE_BF16, mode);
  std::vector<int32_t> rep = random_replay(rng, T, E, k);
  std::vector<float> dw((size_t)T * k, 0.25f);
  DBuf<uint8_t> d_logits(logits.size());
  d_logits.up(logits.data());
  DBuf<int32_t> d_rep(rep.size()), d_idx(rep.size()), d_idx2(rep.size());
  DBuf<float> d_w(rep.size()), d_w2(rep.size()), d_dw(dw.size()), d_grad((size_t)T * E);
  DBuf<int64_t> d_nf(1), d_nf2(1);
  DBuf<uint8_t> d_flags((size_t)T), d_flags2((size_t)T);
  d_rep.up(rep.data());
  d_dw.up(dw.data());
  const bool error_policy = c.nonfinite == MOE_NONFINITE_ERROR;
  const int64_t nan_row = 321;
  std::vector<uint8_t> bad_logits = logits;  // bf16: 2 bytes per logit
  bad_logits[(nan_row * E + 7 % E) * 2] = 0xc0;
  bad_logits[(nan_row * E + 7 % E) * 2 + 1] = 0x7f;
  DBuf<uint8_t> d_bad(bad_logits.size());
  DBuf<int32_t> d_bad_idx(rep.size());
  DBuf<float> d_bad_w(rep.size());
  d_bad.up(bad_logits.data());
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ++g_checks;
  CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  int s1 = moe_route(r.gpu, d_logits.p, MOE_DTYPE_BF16, T, nullptr, nullptr, d_idx.p, d_w.p, d_flags.p, d_nf.p, s);
  int s2 = moe_route(r.gpu, d_logits.p, MOE_DTYPE_BF16, T, d_rep.p, nullptr, d_idx2.p, d_w2.p, d_flags2.p, d_nf2.p, s);
  int s3 = moe_route_backward(r.gpu, d_logits.p, MOE_DTYPE_BF16, T, d_rep.p, d_dw.p, d_flags2.p, d_grad.p, s);
  int s4 = error_policy ? moe_route(r.gpu, d_bad.p, MOE_DTYPE_BF16, T, nullptr, nullptr, d_bad_idx.p, d_bad_w.p,
                                    nullptr, nullptr, s)
                        : MOE_OK;
  cudaError_t ce = cudaStreamEndCapture(s, &graph);
  if (s1 != MOE_OK || s2 != MOE_OK || s3 != MOE_OK || s4 != MOE_OK || ce != cudaSuccess) {
    failf("%s graph capture failed: %d %d %d %d %s (%s)", c.name, s1, s2, s3, s4, cudaGetErrorString(ce),
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
  d_bad_idx.poison();
  d_bad_w.poison();
  CK(cudaGraphLaunch(exec, s));
  CK(cudaGraphLaunch(exec, s));
  CK(cudaStreamSynchronize(s));
  std::vector<int32_t> ci(rep.size()), ci2(rep.size());
  std::vector<float> cw(rep.size()), cw2(rep.size()), cg((size_t)T * E);
  std::vector<uint8_t> cf((size_t)T), cf2((size_t)T);
  int64_t cnf = 0, cnf2 = 0;
  MK(moe_route(r.cpu, logits.data(), MOE_DTYPE_BF16, T, nullptr, nullptr, ci.data(), cw.data(), cf.data(), &cnf,
               nullptr));
  MK(moe_route(r.cpu, logits.data(), MOE_DTYPE_BF16, T, rep.data(), nullptr, ci2.data(), cw2.data(), cf2.data(), &cnf2,
               nullptr));
  MK(moe_route_backward(r.cpu, logits.data(), MOE_DTYPE_BF16, T, rep.data(), dw.data(), cf2.data(), cg.data(),
                        nullptr));
  const std::vector<uint8_t> gf = d_flags.down(), gf2 = d_flags2.down();
  compare_route(std::string(c.name) + " graph live", T, k, ci, cw, cnf, d_idx.down(), d_w.down(), d_nf.down()[0], &cf,
                &gf);
  compare_route(std::string(c.name) + " graph replay", T, k, ci2, cw2, cnf2, d_idx2.down(), d_w2.down(),
                d_nf2.down()[0], &cf2, &gf2);
  compare_grad(std::string(c.name) + " graph backward", cg, d_grad.down());
  if (error_policy) {
    std::vector<int32_t> bi(rep.size());
    std::vector<float> bw(rep.size());
    const int st = moe_route(r.cpu, bad_logits.data(), MOE_DTYPE_BF16, T, nullptr, nullptr, bi.data(), bw.data(),
                             nullptr, nullptr, nullptr);
    expect_device_rejection(r.gpu, std::string(c.name) + " graph with a rejected call", st, moe_last_error_message());
    if (!all_bits(d_bad_idx.down(), 0xff) || !all_bits(d_bad_w.down(), 0xff))
      failf("%s graph: the rejected call wrote outputs", c.name);
  }
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
              "sections: sweep, invalid, graph, agreement, goldens, edges, grouped, concurrency, bias, training\n",
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

  constexpr int kDefault = MOE_NORMALIZE_DEFAULT, kOn = MOE_NORMALIZE_ON, kOff = MOE_NORMALIZE_OFF;
  constexpr int kTopk = MOE_GROUP_TOPK_SUM, kTop2 = MOE_GROUP_TOP2_SUM, kMax = MOE_GROUP_MAX;
  constexpr int kProp = MOE_NONFINITE_PROPAGATE, kZero = MOE_NONFINITE_ZERO, kError = MOE_NONFINITE_ERROR;
  constexpr int kReject = MOE_MINUS_ONE_REJECT, kLive = MOE_MINUS_ONE_LIVE, kArange = MOE_MINUS_ONE_ARANGE;
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
      // spec sections 1-5 (routing semantics v2): scores, bias, normalize, group rules
      {"sqrtsoftplus_E64_k6", 64, 6, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, false},
      with_options({"sqrtsoftplus_bias_E256_k8_g8_4_top2", 256, 8, MOE_SCORE_SQRTSOFTPLUS, 0, 8, 4, 2.5f, true},
                   kDefault, kTop2, kProp, kReject),
      with_options({"sqrtsoftplus_nonorm_E48_k6_scale", 48, 6, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 2.0f, false}, kOff,
                   kTopk, kProp, kReject),
      {"sqrtsoftplus_bias_E1000_k12", 1000, 12, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, true},
      {"softmax_pre_bias_E64_k6", 64, 6, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, true},
      with_options({"softmax_pre_bias_norm_E96_k8_g8_3_max", 96, 8, MOE_SCORE_SOFTMAX, 1, 8, 3, 1.0f, true}, kOn, kMax,
                   kProp, kReject),
      with_options({"softmax_pre_norm_E2047_k16", 2047, 16, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.5f, false}, kOn, kTopk,
                   kProp, kReject),
      with_options({"sigmoid_nonorm_E48_k8_scale", 48, 8, MOE_SCORE_SIGMOID, 0, 0, 0, 2.0f, false}, kOff, kTopk, kProp,
                   kReject),
      with_options({"sigmoid_max_E48_k5_g6_2", 48, 5, MOE_SCORE_SIGMOID, 0, 6, 2, 1.0f, false}, kDefault, kMax, kProp,
                   kReject),
      with_options({"sigmoid_bias_top2_E128_k6_g8_4", 128, 6, MOE_SCORE_SIGMOID, 0, 8, 4, 1.0f, true}, kDefault, kTop2,
                   kProp, kReject),
      {"softmax_topksum_E64_k7_g8_2", 64, 7, MOE_SCORE_SOFTMAX, 0, 8, 2, 1.0f, false},
      // register path (E <= 256, 8 slots per lane): E not a multiple of 32, a last slot with one expert,
      // k > 32 (second entry), groups that straddle lanes and slots
      with_options({"softmax_pre_bias_E200_k9_g8_3_top2", 200, 9, MOE_SCORE_SOFTMAX, 1, 8, 3, 1.0f, true}, kDefault,
                   kTop2, kProp, kReject),
      {"sigmoid_E250_k40", 250, 40, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false},
      with_options({"sqrtsoftplus_bias_E129_k8_g3_1_max", 129, 8, MOE_SCORE_SQRTSOFTPLUS, 0, 3, 1, 1.0f, true},
                   kDefault, kMax, kZero, kReject),
      {"sigmoid_topksum_E4096_k9_g64_4", 4096, 9, MOE_SCORE_SIGMOID, 0, 64, 4, 1.0f, false},
      // non-finite policies (per-row flags, zeroed weights and gradients, rejections)
      with_options({"softmax_post_zero_E128_k8", 128, 8, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false}, kDefault, kTopk,
                   kZero, kReject),
      with_options({"sigmoid_bias_zero_E64_k4", 64, 4, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, true}, kDefault, kTopk, kZero,
                   kReject),
      with_options({"softmax_pre_norm_zero_E600_k40", 600, 40, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false}, kOn, kTopk,
                   kZero, kReject),
      with_options({"sqrtsoftplus_zero_E33_k33", 33, 33, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, false}, kDefault,
                   kTopk, kZero, kReject),
      with_options({"softmax_post_error_E64_k6", 64, 6, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false}, kDefault, kTopk,
                   kError, kReject),
      with_options({"sigmoid_bias_error_E256_k8_g8_4", 256, 8, MOE_SCORE_SIGMOID, 0, 8, 4, 1.0f, true}, kDefault,
                   kTopk, kError, kReject),
      with_options({"softmax_pre_bias_error_E513_k9", 513, 9, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, true}, kDefault, kTopk,
                   kError, kReject),
      with_options({"sqrtsoftplus_error_E40_k36", 40, 36, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, false}, kDefault,
                   kTopk, kError, kReject),
      // replay rows of -1
      with_options({"softmax_post_live_E64_k6", 64, 6, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false}, kDefault, kTopk, kProp,
                   kLive),
      with_options({"sigmoid_arange_E96_k8", 96, 8, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false}, kDefault, kTopk, kProp,
                   kArange),
      with_options({"softmax_pre_live_E64_k6", 64, 6, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false}, kDefault, kTopk, kProp,
                   kLive),
      with_options({"softmax_pre_arange_E700_k8", 700, 8, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false}, kDefault, kTopk,
                   kProp, kArange),
      with_options({"sqrtsoftplus_bias_error_live_E128_k4", 128, 4, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, true},
                   kDefault, kTopk, kError, kLive),
      with_options({"sigmoid_zero_arange_E64_k4", 64, 4, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false}, kDefault, kTopk,
                   kZero, kArange),
      with_options({"softmax_pre_zero_live_E64_k2", 64, 2, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false}, kDefault, kTopk,
                   kZero, kLive),
  };
  constexpr int kV1Configs = 19;  // the first ones: quick runs keep their data modes
  std::mt19937_64 rng(seed);
  cudaStream_t stream;
  CK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const int64_t Ts_full[] = {1, 37, 1000};
  const int64_t Ts_quick[] = {1, 37};
  // The register path (E <= 256) routes 4 tokens per warp pass when k <= 8 and the tokens exceed one per
  // warp of a full wave (at most 16 blocks of 4 warps per SM): its configurations' last T is above that.
  const int64_t T_passes = (int64_t)prop.multiProcessorCount * 16 * 4 + 5;
  // Data modes (check_support.h): 0 normal, 1 ties, 2 wide, 3 NaN/inf rows, 7 saturated. A quick run
  // takes one per dtype: for the v1 configurations as always; for the others non-finite rows where a
  // policy acts on them (ERROR: one dtype without, so that calls are also accepted), saturated or
  // wide values elsewhere.
  auto quick_mode = [&](const Config& c, int index, int dtype) {
    if (index < kV1Configs) return (dtype + 1) % 4;
    if (c.nonfinite == MOE_NONFINITE_ERROR) return dtype == MOE_DTYPE_F32 ? 1 : 3;
    if (c.nonfinite == MOE_NONFINITE_ZERO) return dtype == MOE_DTYPE_BF16 ? 7 : 3;
    return dtype == MOE_DTYPE_F32 ? 1 : dtype == MOE_DTYPE_BF16 ? (index % 2 ? 7 : 2) : 3;
  };
  const int modes[] = {0, 1, 2, 3, 7};
  int index = -1;
  for (const Config& c : configs) {
    ++index;
    if (!run("sweep") && !run("invalid")) break;
    const int fails_before = g_failures;
    const long long big = (long long)c.E >= 2048 ? 1 : 0;
    if (run("sweep"))
      for (int dtype = 0; dtype < 3; ++dtype)
        for (int mode : modes) {
          if (quick ? mode != quick_mode(c, index, dtype) : mode == 7 && index < kV1Configs) continue;
          const int64_t* Ts = quick ? Ts_quick : Ts_full;
          const int nT = quick ? 2 : 3;
          for (int ti = 0; ti < nT; ++ti) {
            int64_t T = Ts[ti];
            if (big && T > 100) T = 200;
            if (ti == nT - 1 && c.E <= 256 && c.k <= 8 && T < T_passes) T = T_passes;
            check_case(c, dtype, T, mode, rng, stream);
          }
        }
    if (run("invalid")) check_invalid(c, rng, stream, index % 2 ? 250 : 300);
    printf("%-36s %s\n", c.name, g_failures == fails_before ? "ok" : "MISMATCH");
    fflush(stdout);
  }
  // Register-path selection (each lane's keys sorted once and popped by the round's winner; packed bf16/fp16
  // keys that carry the winner's logit): ties (rows quantised to halves: equal keys, -0 beside +0),
  // NaN/inf rows and saturated rows in every dtype; E not a multiple of 32 on 2, 4 and 8 slots; k > 32; a
  // group limit and softmax pre on packed keys; R keys (a bias: the stable sort of equal keys); 4 tokens
  // per warp pass with T not a multiple of 4 (T_passes), one per warp at T = 37.
  if (run("sweep")) {
    const Config selection[] = {
        {"selection_softmax_post_E50_k6", 50, 6, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
        {"selection_softmax_post_E120_k8", 120, 8, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
        {"selection_sigmoid_E200_k8", 200, 8, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, false},
        {"selection_sqrtsoftplus_E250_k36", 250, 36, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, false},
        {"selection_softmax_pre_E100_k5", 100, 5, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false},
        {"selection_softmax_post_E96_k6_g4_2", 96, 6, MOE_SCORE_SOFTMAX, 0, 4, 2, 1.0f, false},
        {"selection_sigmoid_bias_E90_k8", 90, 8, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, true},
    };
    for (const Config& c : selection) {
      const int fails_before = g_failures;
      for (int dtype = 0; dtype < 3; ++dtype)
        for (int mode : {1, 3, 7})
          for (int64_t T : {(int64_t)37, T_passes}) check_case(c, dtype, T, mode, rng, stream);
      printf("%-36s %s\n", c.name, g_failures == fails_before ? "ok" : "MISMATCH");
      fflush(stdout);
    }
  }
  if (run("graph")) {
    check_graph(configs[15], rng);
    check_graph(configs[9], rng);
    auto named = [&](const char* name) -> const Config& {
      for (const Config& c : configs)
        if (!strcmp(c.name, name)) return c;
      fprintf(stderr, "moe_check: no configuration %s\n", name);
      exit(2);
    };
    check_graph(named("sigmoid_bias_error_E256_k8_g8_4"), rng);  // a rejected call inside the graph
    check_graph(named("sigmoid_bias_zero_E64_k4"), rng, 3);      // flags and zeroed rows
  }
  if (run("agreement")) check_agreement(rng, stream);
  if (run("goldens") && !goldens.empty()) run_goldens(goldens, stream);
  if (run("edges")) run_edges(stream, quick);
  if (run("grouped")) run_grouped(stream, quick);
  if (run("concurrency")) run_concurrency(quick);
  if (run("bias")) run_bias(quick);
  if (run("training")) run_training(stream, quick);
  CK(cudaStreamDestroy(stream));
  CK(cudaDeviceSynchronize());
#ifdef MOE_SIMT
  const std::string where = std::string("in order ") + simt::order_name() + " (SIMT host emulation, " +
                            std::to_string(simt::sm_count()) + " SMs)";
#else
  const std::string where = std::string("on ") + prop.name;
#endif
  printf("covered: %lld calls rejected by the CPU backend (non-finite ERROR) and by CUDA alike, %lld rows flagged "
         "non-finite, %lld replay rows of -1 accepted\n",
         g_rejected_calls, g_flagged_rows, g_minus_one_rows);
  if (g_failures) {
    printf("CUDA kernels: %d of %d checks FAILED %s\n", g_failures, g_checks, where.c_str());
    printf("moe_check: FAIL\n");
    return 1;
  }
  printf("CUDA kernels: %d checks passed %s\n", g_checks, where.c_str());
  printf("moe_check: PASS\n");
  return 0;
}
