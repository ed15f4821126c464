// SPDX-License-Identifier: Apache-2.0
// moe_check section "concurrency": one router used from several threads, streams and graph
// launches at once (moe_cuda_router.cu's head comment gives the design under test). Each case
// checks that valid calls produce the CPU backend's outputs, rejected calls write nothing, and
// check_replay reports every rejection exactly once; plus the caller's CUDA error state.
#include <thread>

#include "check_support.h"

namespace check {
namespace {

// Bad rows planted in invalid replays; check_replay reports the smallest since the last check.
constexpr int64_t kT = 200;

struct Inputs {
  Config cfg;
  std::vector<uint8_t> logits;  // fp32
  std::vector<int32_t> valid, invalid;
  std::vector<float> dw;
  // CPU results
  std::vector<int32_t> live_idx, replay_idx;
  std::vector<float> live_w, replay_w, grad;
};

Inputs make_inputs(const Config& c, int64_t bad_row, std::mt19937_64& rng, Routers& r) {
  Inputs in;
  in.cfg = c;
  in.logits = make_logits(rng, kT, c.E, MOE_DTYPE_F32, 0);
  in.valid = random_replay(rng, kT, c.E, c.k);
  in.invalid = in.valid;
  in.invalid[bad_row * c.k + c.k - 1] = in.invalid[bad_row * c.k];  // duplicate expert
  in.dw.resize((size_t)kT * c.k);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& x : in.dw) x = nd(rng);
  const size_t n = (size_t)kT * c.k;
  in.live_idx.resize(n);
  in.replay_idx.resize(n);
  in.live_w.resize(n);
  in.replay_w.resize(n);
  in.grad.resize((size_t)kT * c.E);
  MK(moe_route(r.cpu, in.logits.data(), MOE_DTYPE_F32, kT, nullptr, nullptr, in.live_idx.data(), in.live_w.data(), nullptr,
               nullptr, nullptr));
  MK(moe_route(r.cpu, in.logits.data(), MOE_DTYPE_F32, kT, in.valid.data(), nullptr, in.replay_idx.data(),
               in.replay_w.data(), nullptr, nullptr, nullptr));
  MK(moe_route_backward(r.cpu, in.logits.data(), MOE_DTYPE_F32, kT, in.valid.data(), in.dw.data(), nullptr, in.grad.data(),
                        nullptr));
  return in;
}

// Device copies of the inputs plus one set of outputs.
struct Slot {
  DBuf<uint8_t> logits;
  DBuf<int32_t> valid, invalid, idx;
  DBuf<float> dw, w, grad;
  DBuf<int64_t> nf;
  Slot(const Inputs& in)
      : logits(in.logits.size()), valid(in.valid.size()), invalid(in.invalid.size()), idx(in.valid.size()),
        dw(in.dw.size()), w(in.valid.size()), grad(in.grad.size()), nf(1) {
    logits.up(in.logits.data());
    valid.up(in.valid.data());
    invalid.up(in.invalid.data());
    dw.up(in.dw.data());
    poison();
  }
  void poison() {
    idx.poison();
    w.poison();
    grad.poison();
    nf.poison();
  }
};

bool untouched(const Slot& s) {
  for (int32_t v : s.idx.down())
    if (v != -1) return false;
  for (float v : s.w.down())
    if (fbits(v) != 0xffffffffu) return false;
  return s.nf.down()[0] == -1;
}

void expect_replayed(const std::string& what, const Inputs& in, const Slot& s) {
  compare_route(what, kT, in.cfg.k, in.replay_idx, in.replay_w, 0, s.idx.down(), s.w.down(), s.nf.down()[0]);
}

void expect_rejected(const std::string& what, const Slot& s) {
  ++g_checks;
  if (!untouched(s)) failf("%s: a rejected call wrote outputs", what.c_str());
}

void expect_check(moe_router* gpu, int64_t row, const std::string& what) {
  int64_t got = -2;
  int reason = -1;
  const int st = moe_router_check_replay(gpu, &got, &reason);
  ++g_checks;
  if (row < 0 && st != MOE_OK)
    failf("%s: check_replay reported row %lld (%s), expected nothing", what.c_str(), (long long)got,
          moe_last_error_message());
  if (row >= 0 && (st != MOE_ERR_INVALID_REPLAY || got != row || reason != MOE_REPLAY_DUPLICATE))
    failf("%s: check_replay status %d row %lld reason %d, expected row %lld (duplicate)", what.c_str(), st,
          (long long)got, reason, (long long)row);
}

cudaStream_t new_stream() {
  cudaStream_t s;
  CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

const Config kConfigs[] = {
    // replay kernel path (post-softmax), and full-row replay through the live kernel (pre-softmax)
    {"conc_softmax_post_E64_k6", 64, 6, MOE_SCORE_SOFTMAX, 0, 0, 0, 1.0f, false},
    {"conc_softmax_pre_E96_k8", 96, 8, MOE_SCORE_SOFTMAX, 1, 0, 0, 1.0f, false},
    // non-finite policy ERROR: every call, live ones included, takes a verdict slot
    with_options({"conc_sqrtsoftplus_bias_error_E64_k4", 64, 4, MOE_SCORE_SQRTSOFTPLUS, 0, 0, 0, 1.0f, true},
                 MOE_NORMALIZE_DEFAULT, MOE_GROUP_TOPK_SUM, MOE_NONFINITE_ERROR, MOE_MINUS_ONE_REJECT),
};

// Interleaved enqueues on two streams, one call of each pair rejected: the valid one must still run
// and the rejected one must write nothing (a per-router verdict slot fails both ways).
void rejection_beside_valid_call(const Config& c) {
  std::mt19937_64 rng(11);
  Routers r(c, rng);
  Inputs in = make_inputs(c, 50, rng, r);
  cudaStream_t a = new_stream(), b = new_stream();
  std::vector<std::unique_ptr<Slot>> slots;
  for (int i = 0; i < 6; ++i) slots.emplace_back(new Slot(in));
  for (int i = 0; i < 6; ++i) {
    Slot& s = *slots[i];
    const bool bad = i % 2 == 0;
    MK(moe_route(r.gpu, s.logits.p, MOE_DTYPE_F32, kT, bad ? s.invalid.p : s.valid.p, nullptr, s.idx.p, s.w.p, nullptr, s.nf.p,
                 (i / 2) % 2 ? a : b));
    MK(moe_route_backward(r.gpu, s.logits.p, MOE_DTYPE_F32, kT, bad ? s.invalid.p : s.valid.p, s.dw.p, nullptr, s.grad.p,
                          (i / 2) % 2 ? b : a));
  }
  CK(cudaStreamSynchronize(a));
  CK(cudaStreamSynchronize(b));
  for (int i = 0; i < 6; ++i) {
    const std::string what = std::string(c.name) + " two streams, call " + std::to_string(i);
    if (i % 2 == 0) {
      expect_rejected(what, *slots[i]);
      ++g_checks;
      for (float v : slots[i]->grad.down())
        if (fbits(v) != 0xffffffffu) {
          failf("%s: a rejected backward wrote gradients", what.c_str());
          break;
        }
    } else {
      expect_replayed(what, in, *slots[i]);
      compare_grad(what + " backward", in.grad, slots[i]->grad.down());
    }
  }
  expect_check(r.gpu, 50, std::string(c.name) + " two streams");
  expect_check(r.gpu, -1, std::string(c.name) + " two streams, second check");
  CK(cudaStreamDestroy(a));
  CK(cudaStreamDestroy(b));
}

// Several host threads, each with its own stream, share the router.
void threads_and_streams(const Config& c, bool quick) {
  std::mt19937_64 rng(12);
  Routers r(c, rng);
  const int threads = 4, iters = quick ? 3 : 8;
  std::vector<Inputs> ins;
  for (int t = 0; t < threads; ++t) ins.push_back(make_inputs(c, 20 + t, rng, r));
  std::vector<std::thread> pool;
  std::vector<int> failures(threads, 0);
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      cudaStream_t s = new_stream();
      Slot slot(ins[t]);
      for (int i = 0; i < iters; ++i) {
        const bool bad = (i + t) % 3 == 0;
        slot.poison();
        if (moe_route(r.gpu, slot.logits.p, MOE_DTYPE_F32, kT, bad ? slot.invalid.p : slot.valid.p, nullptr, slot.idx.p,
                      slot.w.p, nullptr, slot.nf.p, s) != MOE_OK) {
          ++failures[t];
          continue;
        }
        CK(cudaStreamSynchronize(s));
        const int before = g_failures;
        const std::string what = std::string(c.name) + " thread " + std::to_string(t) + " call " + std::to_string(i);
        if (bad)
          expect_rejected(what, slot);
        else
          expect_replayed(what, ins[t], slot);
        failures[t] += g_failures != before;
      }
      CK(cudaStreamDestroy(s));
    });
  for (auto& th : pool) th.join();
  for (int t = 0; t < threads; ++t)
    if (failures[t]) failf("%s: thread %d had %d failed calls", c.name, t, failures[t]);
  expect_check(r.gpu, 20, std::string(c.name) + " threads");  // thread 0 planted row 20 at i = 0
  expect_check(r.gpu, -1, std::string(c.name) + " threads, second check");
}

// The caller destroys its stream right after the call: the router must not touch it again.
void destroyed_stream() {
  const Config c{"conc_sigmoid_bias_E64_k4", 64, 4, MOE_SCORE_SIGMOID, 0, 0, 0, 1.0f, true};
  std::mt19937_64 rng(13);
  Routers r(c, rng);
  Inputs in = make_inputs(c, 30, rng, r);
  Slot ok(in), bad(in);
  cudaStream_t s = new_stream();
  MK(moe_route(r.gpu, ok.logits.p, MOE_DTYPE_F32, kT, ok.valid.p, nullptr, ok.idx.p, ok.w.p, nullptr, ok.nf.p, s));
  MK(moe_route(r.gpu, bad.logits.p, MOE_DTYPE_F32, kT, bad.invalid.p, nullptr, bad.idx.p, bad.w.p, nullptr, bad.nf.p, s));
  CK(cudaStreamDestroy(s));  // legal with work pending: it still runs
  expect_check(r.gpu, 30, "destroyed stream");
  expect_replayed("destroyed stream", in, ok);
  expect_rejected("destroyed stream", bad);
  std::vector<float> bias(c.E, 0.25f);
  ++g_checks;
  if (moe_router_set_bias(r.gpu, bias.data()) != MOE_OK)
    failf("destroyed stream: set_bias failed: %s", moe_last_error_message());
}

// One captured graph launched twice on one stream and once on another (CUDA serialises launches of
// an executable graph); a graph with a rejected call beside a valid one; two graphs at once.
void graphs(const Config& c) {
  std::mt19937_64 rng(14);
  Routers r(c, rng);
  Inputs in = make_inputs(c, 40, rng, r);
  Slot good(in), bad(in), live(in);
  cudaStream_t s = new_stream(), s2 = new_stream();
  auto capture = [&](bool with_bad, cudaGraphExec_t* exec) {
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    int st1 = moe_route(r.gpu, good.logits.p, MOE_DTYPE_F32, kT, good.valid.p, nullptr, good.idx.p, good.w.p, nullptr,
                        good.nf.p, s);
    int st2 = moe_route_backward(r.gpu, good.logits.p, MOE_DTYPE_F32, kT, good.valid.p, good.dw.p, nullptr, good.grad.p, s);
    int st3 = with_bad ? moe_route(r.gpu, bad.logits.p, MOE_DTYPE_F32, kT, bad.invalid.p, nullptr, bad.idx.p, bad.w.p, nullptr,
                                   bad.nf.p, s)
                       : moe_route(r.gpu, live.logits.p, MOE_DTYPE_F32, kT, nullptr, nullptr, live.idx.p, live.w.p, nullptr,
                                   live.nf.p, s);
    int st4 = moe_route(r.gpu, live.logits.p, MOE_DTYPE_F32, 0, live.valid.p, nullptr, live.idx.p, live.w.p, nullptr, nullptr, s);
    cudaError_t e = cudaStreamEndCapture(s, &g);
    ++g_checks;
    if (st1 || st2 || st3 || st4 || e != cudaSuccess) {
      failf("%s: capture failed: %d %d %d %d %s (%s)", c.name, st1, st2, st3, st4, cudaGetErrorName(e),
            moe_last_error_message());
      return false;
    }
    CK(cudaGraphInstantiate(exec, g, 0));
    CK(cudaGraphDestroy(g));
    return true;
  };
  cudaGraphExec_t x1, x2;
  if (!capture(false, &x1) || !capture(true, &x2)) return;
  const std::string name = c.name;
  // twice on one stream, once on another
  good.poison();
  live.poison();
  CK(cudaGraphLaunch(x1, s));
  CK(cudaGraphLaunch(x1, s));
  CK(cudaGraphLaunch(x1, s2));
  CK(cudaStreamSynchronize(s));
  CK(cudaStreamSynchronize(s2));
  expect_replayed(name + " graph x3", in, good);
  compare_grad(name + " graph x3 backward", in.grad, good.grad.down());
  compare_route(name + " graph x3 live", kT, c.k, in.live_idx, in.live_w, 0, live.idx.down(), live.w.down(),
                live.nf.down()[0]);
  expect_check(r.gpu, -1, name + " valid graph");
  // the graph holding a rejected call, launched twice: its valid calls still run
  good.poison();
  bad.poison();
  CK(cudaGraphLaunch(x2, s));
  CK(cudaGraphLaunch(x2, s2));
  CK(cudaStreamSynchronize(s));
  CK(cudaStreamSynchronize(s2));
  expect_replayed(name + " graph with a rejected call", in, good);
  expect_rejected(name + " graph with a rejected call", bad);
  expect_check(r.gpu, 40, name + " graph with a rejected call");
  // both graphs at once on two streams
  good.poison();
  bad.poison();
  CK(cudaGraphLaunch(x2, s));
  CK(cudaGraphLaunch(x1, s2));
  CK(cudaStreamSynchronize(s));
  CK(cudaStreamSynchronize(s2));
  expect_replayed(name + " two graphs at once", in, good);
  expect_rejected(name + " two graphs at once", bad);
  expect_check(r.gpu, 40, name + " two graphs at once");
  CK(cudaGraphExecDestroy(x1));
  CK(cudaGraphExecDestroy(x2));
  CK(cudaStreamDestroy(s));
  CK(cudaStreamDestroy(s2));
}

// Graph slots come back when graphs are destroyed: more captures than slots, one at a time.
void graph_slots_recycle(const Config& c, int rounds) {
  std::mt19937_64 rng(15);
  Routers r(c, rng);
  Inputs in = make_inputs(c, 10, rng, r);
  Slot slot(in);
  cudaStream_t s = new_stream();
  int failed = 0;
  for (int i = 0; i < rounds && failed == 0; ++i) {
    int st = MOE_ERR_OUT_OF_MEMORY;
    // The runtime calls user-object destructors asynchronously: give a freed slot time to return.
    for (int attempt = 0; attempt < 200 && st == MOE_ERR_OUT_OF_MEMORY; ++attempt) {
      cudaGraph_t g;
      CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
      st = moe_route_backward(r.gpu, slot.logits.p, MOE_DTYPE_F32, kT, slot.valid.p, slot.dw.p, nullptr, slot.grad.p, s);
      CK(cudaStreamEndCapture(s, &g));
      if (st == MOE_OK) {
        cudaGraphExec_t x;
        CK(cudaGraphInstantiate(&x, g, 0));
        CK(cudaGraphExecDestroy(x));
      }
      CK(cudaGraphDestroy(g));
      if (st == MOE_ERR_OUT_OF_MEMORY) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    failed += st != MOE_OK;
  }
  ++g_checks;
  if (failed) failf("%s: %d captures after destroying each graph: slots did not come back (%s)", c.name, rounds,
                    moe_last_error_message());
  CK(cudaStreamDestroy(s));
}

// An error the application left pending survives our calls; our own failures leave none behind.
void caller_error_state(const Config& c) {
  std::mt19937_64 rng(16);
  Routers r(c, rng);
  Inputs in = make_inputs(c, 5, rng, r);
  Slot slot(in);
  cudaStream_t s = new_stream();
  void* huge = nullptr;
  const cudaError_t planted = cudaMalloc(&huge, (size_t)1 << 62);  // fails, non-sticky
  ++g_checks;
  if (planted != cudaErrorMemoryAllocation) {
    failf("could not plant a pending CUDA error (%s)", cudaGetErrorName(planted));
    return;
  }
  std::vector<int32_t> hi(in.valid.size());
  std::vector<float> hw(in.valid.size());
  int st[5];
  st[0] = moe_route(r.gpu, slot.logits.p, MOE_DTYPE_F32, kT, slot.valid.p, nullptr, slot.idx.p, slot.w.p, nullptr, slot.nf.p, s);
  st[1] = moe_route_backward(r.gpu, slot.logits.p, MOE_DTYPE_F32, kT, slot.valid.p, slot.dw.p, nullptr, slot.grad.p, s);
  st[2] = moe_route_host(r.gpu, in.logits.data(), MOE_DTYPE_F32, kT, nullptr, nullptr, hi.data(), hw.data(), nullptr, nullptr);
  st[3] = moe_router_check_replay(r.gpu, nullptr, nullptr);
  st[4] = moe_cuda_device_count() > 0 ? MOE_OK : MOE_ERR_NO_DEVICE;
  const cudaError_t after = cudaPeekAtLastError();
  ++g_checks;
  if (st[0] || st[1] || st[2] || st[3] || st[4] || after != cudaErrorMemoryAllocation)
    failf("pending application error: statuses %d %d %d %d %d, pending error afterwards %s (expected "
          "cudaErrorMemoryAllocation)",
          st[0], st[1], st[2], st[3], st[4], cudaGetErrorName(after));
  (void)cudaGetLastError();
  CK(cudaStreamSynchronize(s));
  expect_replayed("pending application error", in, slot);
#ifdef MOE_SIMT
  // Our own failure (staging allocation beyond the emulated device memory) reports through the
  // status and leaves no pending CUDA error.
  simt::set_device_memory_limit((size_t)64 << 20);
  std::vector<float> big((size_t)300000 * c.E);
  std::vector<int32_t> bi((size_t)300000 * c.k);
  std::vector<float> bw(bi.size());
  const int fs = moe_route_host(r.gpu, big.data(), MOE_DTYPE_F32, 300000, nullptr, nullptr, bi.data(), bw.data(), nullptr, nullptr);
  simt::set_device_memory_limit((size_t)16 << 30);
  ++g_checks;
  if (fs != MOE_ERR_CUDA || cudaPeekAtLastError() != cudaSuccess)
    failf("own failure: status %d (%s), pending error afterwards %s", fs, moe_last_error_message(),
          cudaGetErrorName(cudaPeekAtLastError()));
#endif
  CK(cudaStreamDestroy(s));
}

// Rejections of calls on two streams, both enqueued before check_replay: one report (the lower
// row), none lost, none repeated.
void check_replay_takes_all(const Config& c) {
  std::mt19937_64 rng(17);
  Routers r(c, rng);
  Inputs late = make_inputs(c, 7, rng, r), early = make_inputs(c, 3, rng, r);
  Slot s7(late), s3(early);
  cudaStream_t a = new_stream(), b = new_stream();
  MK(moe_route(r.gpu, s7.logits.p, MOE_DTYPE_F32, kT, s7.invalid.p, nullptr, s7.idx.p, s7.w.p, nullptr, s7.nf.p, a));
  CK(cudaStreamSynchronize(a));
  MK(moe_route(r.gpu, s3.logits.p, MOE_DTYPE_F32, kT, s3.invalid.p, nullptr, s3.idx.p, s3.w.p, nullptr, s3.nf.p, b));
  expect_check(r.gpu, 3, "two streams' rejections");
  expect_check(r.gpu, -1, "two streams' rejections, second check");
  CK(cudaStreamDestroy(a));
  CK(cudaStreamDestroy(b));
}

// Non-finite policy ERROR: a call reading a NaN on one stream and an invalid replay on another, both
// enqueued before check_replay: one report, the invalid row (as the CPU checks indices first), then
// nothing; alone, the non-finite call is reported with its row, expert and value.
void nonfinite_beside_invalid_replay(const Config& c) {
  std::mt19937_64 rng(17);
  Routers r(c, rng);
  Inputs in = make_inputs(c, 150, rng, r);
  std::vector<uint8_t> nan_logits = in.logits;
  const float nan = nanf("");
  memcpy(&nan_logits[(50 * c.E + 3) * 4], &nan, 4);
  Slot bad_nf(in), bad_rep(in);
  bad_nf.logits.up(nan_logits.data());
  cudaStream_t a = new_stream(), b = new_stream();
  for (int round = 0; round < 2; ++round) {
    bad_nf.poison();
    bad_rep.poison();
    MK(moe_route(r.gpu, bad_nf.logits.p, MOE_DTYPE_F32, kT, nullptr, nullptr, bad_nf.idx.p, bad_nf.w.p, nullptr,
                 bad_nf.nf.p, a));
    if (round == 0)
      MK(moe_route(r.gpu, bad_rep.logits.p, MOE_DTYPE_F32, kT, bad_rep.invalid.p, nullptr, bad_rep.idx.p, bad_rep.w.p,
                   nullptr, bad_rep.nf.p, b));
    CK(cudaStreamSynchronize(a));
    CK(cudaStreamSynchronize(b));
    expect_rejected(c.name + std::string(" non-finite call"), bad_nf);
    if (round == 0) {
      expect_rejected(c.name + std::string(" invalid replay"), bad_rep);
      expect_check(r.gpu, 150, c.name + std::string(" invalid row before the non-finite one"));
    } else {
      int64_t row = -2;
      int reason = -1;
      const int st = moe_router_check_replay(r.gpu, &row, &reason);
      ++g_checks;
      if (st != MOE_ERR_NONFINITE || row != 50 || reason != MOE_REPLAY_NONFINITE ||
          !strstr(moe_last_error_message(), "row 50: the logit of expert 3 is NaN"))
        failf("%s non-finite call alone: check_replay status %d row %lld reason %d '%s'", c.name, st, (long long)row,
              reason, moe_last_error_message());
    }
    expect_check(r.gpu, -1, c.name + std::string(" reported once"));
  }
  CK(cudaStreamDestroy(a));
  CK(cudaStreamDestroy(b));
}

}  // namespace

void run_concurrency(bool quick) {
  const int before = g_failures;
  for (const Config& c : kConfigs) {
    rejection_beside_valid_call(c);
    threads_and_streams(c, quick);
    graphs(c);
  }
  destroyed_stream();
  graph_slots_recycle(kConfigs[0], 1100);  // more captures than the router's 1024 graph slots
  caller_error_state(kConfigs[0]);
  check_replay_takes_all(kConfigs[1]);
  nonfinite_beside_invalid_replay(kConfigs[2]);
  printf("%-36s %s\n", "concurrency", g_failures == before ? "ok" : "MISMATCH");
  fflush(stdout);
}

}  // namespace check
