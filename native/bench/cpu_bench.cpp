// SPDX-License-Identifier: Apache-2.0
// CPU backend microbenchmark through the C ABI, for design work (docs/cpu-design.md): ns per token of
// live routing, replay and backward on 1 or N threads, next to the memory floor of the same bytes, min of
// --reps calls (interference on a shared machine only adds time). Short runs of it under
// `valgrind --tool=callgrind` give instruction counts per token, which a loaded machine does not move.
//   cpu_bench [--tokens N] [--reps R] [--threads 1,2] [--configs e64k6,...] [--calls live,replay,backward,floor,gfloor]
//             [--dtype fp32|bf16] [--isa avx512,avx2,scalar] [--spin 0,100] [--gap-us G]
//             [--batch B] [--ceiling 1]
// --isa runs each instruction-set level of the CPU kernels in turn (A/B in one process: moe::cpu_set_isa_cap),
// and checks that every level's replay and live outputs are bit-identical to the first level's.
// --spin runs each pool spin bound in turn (microseconds, moe::cpu_set_pool_spin_us; A/B of the hand-off in one
// process); --gap-us busy-waits G microseconds on the calling thread between timed calls, as an engine's
// other work between two routing calls would (a bound shorter than the gap lets the workers fall asleep).
// --batch times B calls per sample (decode-size calls are shorter than the clock's resolution on this VM).
// --ceiling 1 adds, per config and for the live and replay calls in --calls, what this machine gives a second
// thread at all, next to what the library gets from it, in the same rounds (docs/benchmarks.md, "2-thread
// ceiling"): one router on its calling thread alone (1T), two routers on their own threads and their own copies
// of the inputs, one call each at once (the machine's 2-core ceiling: twice the rows in the time of the slower),
// and one call on the shared pool with 2 threads (the library). Rounds alternate the three; min and median.
// The JMH profile (scripts/bench-profile.sh --cpu-goals) is where the reported numbers come from.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "moe_floor.h"
#include "moe_internal.h"
#include "moe_router.h"

namespace {

struct Config {
  const char* name;
  int experts, k, score, groups, group_topk;
  float scale;
  bool bias;
  int pre;
};

const Config kConfigs[] = {
    {"e64k6", 64, 6, MOE_SCORE_SOFTMAX, 1, 1, 1.0f, false, 0},
    {"e128k8", 128, 8, MOE_SCORE_SOFTMAX, 1, 1, 1.0f, false, 0},
    {"e256k8g", 256, 8, MOE_SCORE_SIGMOID, 8, 4, 2.5f, true, 0},
    {"e512k10", 512, 10, MOE_SCORE_SOFTMAX, 1, 1, 1.0f, false, 0},
    {"e256k8s", 256, 8, MOE_SCORE_SQRTSOFTPLUS, 1, 1, 1.0f, true, 0},
    {"e64k6pre", 64, 6, MOE_SCORE_SOFTMAX, 1, 1, 1.0f, false, 1},
};

uint16_t to_bf16(float f) {
  uint32_t b;
  memcpy(&b, &f, 4);
  return (uint16_t)((b + 0x7fff + ((b >> 16) & 1)) >> 16);
}

double now_ns() {
  return (double)std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// The floors (native/include/moe_floor.h, the JMH benchmarks' loops); g_sink keeps what they read.
volatile uint64_t g_sink;

// Two routers on two threads, one call each per round, started together: the main thread and one helper that
// sleeps between rounds (so that it takes no core from the other measurements) and meets the main thread at a
// barrier before the clock starts. A round's time runs from the first start to the last finish. Both waits
// yield: a thread spinning there while the other waits for a core on a busy machine would hold that core.
class PairRunner {
 public:
  using Call = std::function<void(int)>;  // the call of participant 0 or 1
  explicit PairRunner(Call call) : call_(std::move(call)), helper_([this] { loop(); }) {}
  ~PairRunner() {
    {
      std::lock_guard<std::mutex> g(m_);
      stop_ = true;
      ++round_;
    }
    cv_.notify_one();
    helper_.join();
  }
  double round_ns() {
    arrived_.store(0);
    {
      std::lock_guard<std::mutex> g(m_);
      ++round_;
    }
    cv_.notify_one();
    const double start = meet_and_run(0);
    while (done_.load(std::memory_order_acquire) != round_seen_main_ + 1) std::this_thread::yield();
    ++round_seen_main_;
    const double end = std::max(end_[0], end_[1]);
    return end - std::min(start, start_[1]);
  }

 private:
  double meet_and_run(int who) {
    arrived_.fetch_add(1);
    while (arrived_.load() < 2) std::this_thread::yield();
    const double t0 = now_ns();
    call_(who);
    end_[who] = now_ns();
    return t0;
  }
  void loop() {
    int64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> g(m_);
        cv_.wait(g, [&] { return round_ != seen; });
        seen = round_;
        if (stop_) return;
      }
      start_[1] = meet_and_run(1);
      done_.fetch_add(1, std::memory_order_release);
    }
  }
  Call call_;
  std::mutex m_;
  std::condition_variable cv_;
  int64_t round_ = 0;
  bool stop_ = false;
  std::atomic<int> arrived_{0};
  std::atomic<int64_t> done_{0};
  int64_t round_seen_main_ = 0;
  double start_[2] = {0, 0}, end_[2] = {0, 0};
  std::thread helper_;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
}  // namespace

int main(int argc, char** argv) {
  int64_t tokens = 4096;
  int reps = 30;
  std::string threads_s = "1", configs_s = "e64k6,e128k8,e256k8g,e512k10", calls_s = "live,replay,backward,floor,gfloor",
              dtype_s = "fp32", isa_s = "", spin_s = "";
  int64_t gap_us = 0;
  int batch = 1;
  bool ceiling = false;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--tokens") tokens = atoll(argv[i + 1]);
    else if (a == "--reps") reps = atoi(argv[i + 1]);
    else if (a == "--threads") threads_s = argv[i + 1];
    else if (a == "--configs") configs_s = argv[i + 1];
    else if (a == "--calls") calls_s = argv[i + 1];
    else if (a == "--dtype") dtype_s = argv[i + 1];
    else if (a == "--isa") isa_s = argv[i + 1];
    else if (a == "--spin") spin_s = argv[i + 1];
    else if (a == "--gap-us") gap_us = atoll(argv[i + 1]);
    else if (a == "--batch") batch = std::max(1, atoi(argv[i + 1]));
    else if (a == "--ceiling") ceiling = atoi(argv[i + 1]) != 0;
    else {
      fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  const bool bf16 = dtype_s == "bf16";
  std::vector<int> thread_counts;
  for (size_t p = 0; p < threads_s.size();) {
    thread_counts.push_back(atoi(threads_s.c_str() + p));
    p = threads_s.find(',', p);
    if (p == std::string::npos) break;
    ++p;
  }
  std::vector<int> isas;  // -1: the default (no cap)
  for (size_t p = 0; p < isa_s.size();) {
    size_t q = isa_s.find(',', p);
    std::string v = isa_s.substr(p, q == std::string::npos ? std::string::npos : q - p);
    isas.push_back(v == "scalar" ? moe::kIsaScalar : v == "avx2" ? moe::kIsaAvx2 : moe::kIsaAvx512);
    if (q == std::string::npos) break;
    p = q + 1;
  }
  if (isas.empty()) isas.push_back(-1);
  std::vector<int64_t> spins;  // -1: the environment's bound
  for (size_t p = 0; p < spin_s.size();) {
    spins.push_back(atoll(spin_s.c_str() + p));
    p = spin_s.find(',', p);
    if (p == std::string::npos) break;
    ++p;
  }
  if (spins.empty()) spins.push_back(-1);
  const int64_t env_spin = moe::cpu_set_pool_spin_us(0);
  moe::cpu_set_pool_spin_us(env_spin);
  printf("%-9s %-4s %-6s %5s %3s %8s %10s %10s %10s %8s %8s\n", "config", "dt", "isa", "spin", "thr", "T", "live", "replay",
         "backward", "floor", "gfloor");
  for (const Config& c : kConfigs) {
    if ((std::string(",") + configs_s + ",").find(std::string(",") + c.name + ",") == std::string::npos) continue;
    const int64_t n = tokens * c.experts;
    std::mt19937_64 rng(0x5eed + c.experts);
    std::normal_distribution<float> g(0.0f, 2.0f);
    std::vector<float> f32(n);
    for (auto& v : f32) v = g(rng);
    std::vector<uint16_t> h(bf16 ? n : 0);
    for (int64_t i = 0; i < (int64_t)h.size(); ++i) h[i] = to_bf16(f32[i]);
    const void* logits = bf16 ? (const void*)h.data() : (const void*)f32.data();
    const int dtype = bf16 ? MOE_DTYPE_BF16 : MOE_DTYPE_F32;
    std::vector<float> bias(c.experts);
    for (int e = 0; e < c.experts; ++e) bias[e] = 0.1f * (float)((e * 37) % 11 - 5) / 5.0f;
    moe_router_config rc{};
    rc.num_experts = c.experts;
    rc.top_k = c.k;
    rc.score_fn = c.score;
    rc.pre_softmax = c.pre;
    rc.num_groups = c.groups;
    rc.group_topk = c.group_topk;
    rc.scale = c.scale;
    rc.expert_bias = c.bias ? bias.data() : nullptr;
    moe_router* r = nullptr;
    if (moe_router_create(&rc, MOE_BACKEND_CPU, 0, &r) != MOE_OK) {
      fprintf(stderr, "create %s failed\n", c.name);
      return 1;
    }
    std::vector<int32_t> idx(tokens * c.k), idx2(tokens * c.k);
    std::vector<float> w(tokens * c.k), w2(tokens * c.k), dw(tokens * c.k, 0.5f), grad(n);
    // The replay input, on the first thread count: under callgrind (--toggle-collect=moe_route_host) work on
    // pool workers is not counted, so a 1-thread run must not start with a 2-thread call.
    moe_set_num_threads(thread_counts[0]);
    moe_route_host(r, logits, dtype, tokens, nullptr, nullptr, idx.data(), w.data(), nullptr, nullptr);
    std::vector<int32_t> ref_idx;
    std::vector<float> ref_w, ref_rw;
    for (int isa : isas)
    for (int64_t spin : spins)
    for (int th : thread_counts) {
      const int level = moe::cpu_set_isa_cap(isa);
      moe::cpu_set_pool_spin_us(spin < 0 ? env_spin : spin);
      moe_set_num_threads(th);
      auto best = [&](auto fn) {
        double b = 1e300;
        for (int i = 0; i < reps; ++i) {
          if (gap_us > 0)
            for (double g0 = now_ns(); now_ns() - g0 < 1000.0 * (double)gap_us;) {
            }
          double t0 = now_ns();
          for (int j = 0; j < batch; ++j) fn();
          double t = now_ns() - t0;
          if (t < b) b = t;
        }
        return b / (double)tokens / (double)batch;
      };
      auto has = [&](const char* call) { return calls_s.find(call) != std::string::npos; };
      double live = has("live") ? best([&] {
        moe_route_host(r, logits, dtype, tokens, nullptr, nullptr, idx2.data(), w2.data(), nullptr, nullptr);
      })
                                : 0;
      double replay = has("replay") ? best([&] {
        moe_route_host(r, logits, dtype, tokens, idx.data(), nullptr, idx2.data(), w2.data(), nullptr, nullptr);
      })
                                    : 0;
      if (has("replay") && idx2 != idx) printf("  (%s: replay indices differ from live!)\n", c.name);
      // Every level must give the first level's bits: replay weights, then live indices and weights.
      if (has("replay")) {
        if (ref_rw.empty()) ref_rw = w2;
        else if (memcmp(ref_rw.data(), w2.data(), w2.size() * 4) != 0) printf("  (%s: replay weights MISMATCH)\n", c.name);
      }
      if (has("live")) {
        moe_route_host(r, logits, dtype, tokens, nullptr, nullptr, idx2.data(), w2.data(), nullptr, nullptr);
        if (ref_idx.empty()) ref_idx = idx2, ref_w = w2;
        else if (idx2 != ref_idx || memcmp(ref_w.data(), w2.data(), w2.size() * 4) != 0)
          printf("  (%s: live outputs MISMATCH)\n", c.name);
      }
      double backward = has("backward") ? best([&] {
        moe_route_backward_host(r, logits, dtype, tokens, idx.data(), dw.data(), nullptr, grad.data());
      })
                                        : 0;
      const size_t bytes = (size_t)n * (bf16 ? 2 : 4);
      double fl = !has("floor") ? 0 : best([&] {
        std::vector<std::thread> ts;
        const int64_t per = (tokens + th - 1) / th;
        for (int t = 0; t < th; ++t) {
          int64_t t0 = t * per, t1 = std::min<int64_t>(tokens, t0 + per);
          if (t0 >= t1) break;
          auto job = [&, t0, t1] {
            g_sink = (uint64_t)moe_floor_stream((const char*)logits + bytes / tokens * t0, (int64_t)(bytes / tokens * (t1 - t0)),
                                                idx2.data() + t0 * c.k, w2.data() + t0 * c.k, (t1 - t0) * c.k);
          };
          if (t == th - 1) job();
          else ts.emplace_back(job);
        }
        for (auto& x : ts) x.join();
      });
      // 1 thread, fp32 only (what the JMH replay floor reads).
      double gfl = !has("gfloor") || bf16 || th != 1 ? 0 : best([&] {
        g_sink = (uint64_t)moe_floor_gather(f32.data(), tokens, c.experts, idx.data(), c.k, idx2.data(), w2.data());
      });
      const char* isa_name = level == moe::kIsaAvx512 ? "avx512" : level == moe::kIsaAvx2 ? "avx2" : "scalar";
      printf("%-9s %-4s %-6s %5lld %3d %8lld %10.1f %10.1f %10.1f %8.1f %8.1f\n", c.name, dtype_s.c_str(), isa_name,
             (long long)moe::cpu_set_pool_spin_us(spin < 0 ? env_spin : spin), th,
             (long long)tokens, live, replay, backward, fl, gfl);
    }
    if (ceiling) {
      // Copies of the inputs per participant, routers on their calling threads (moe_router_set_threads 1).
      const size_t in_bytes = (size_t)n * (bf16 ? 2 : 4);
      std::vector<char> in[2];
      std::vector<int32_t> rin[2], oidx[2];
      std::vector<float> ow[2];
      moe_router* own[2] = {nullptr, nullptr};
      for (int q = 0; q < 2; ++q) {
        in[q].assign((const char*)logits, (const char*)logits + in_bytes);
        rin[q] = idx;
        oidx[q].resize(idx.size());
        ow[q].resize(idx.size());
        if (moe_router_create(&rc, MOE_BACKEND_CPU, 0, &own[q]) != MOE_OK || moe_router_set_threads(own[q], 1) != MOE_OK) {
          fprintf(stderr, "create %s failed\n", c.name);
          return 1;
        }
      }
      for (const char* call : {"live", "replay"}) {
        if (calls_s.find(call) == std::string::npos) continue;
        const bool rep = call[0] == 'r';
        auto run = [&](moe_router* rr, int q) {
          moe_route_host(rr, in[q].data(), dtype, tokens, rep ? rin[q].data() : nullptr, nullptr, oidx[q].data(),
                         ow[q].data(), nullptr, nullptr);
        };
        PairRunner pair([&](int q) { run(own[q], q); });
        std::vector<double> alone, both, lib;
        moe_set_num_threads(2);
        for (int i = 0; i < reps; ++i) {
          double t0 = now_ns();
          run(own[0], 0);
          alone.push_back((now_ns() - t0) / (double)tokens);
          both.push_back(pair.round_ns() / (double)(2 * tokens));  // aggregate: 2T rows
          t0 = now_ns();
          run(r, 0);  // the shared pool, 2 threads
          lib.push_back((now_ns() - t0) / (double)tokens);
        }
        // Each round's three calls ran back to back: their ratios compare the same moment of the machine's load.
        std::vector<double> ceil_r, lib_r;
        int ceil_ok = 0, lib_ok = 0;
        for (int i = 0; i < reps; ++i) {
          ceil_r.push_back(alone[i] / both[i]);
          lib_r.push_back(alone[i] / lib[i]);
          ceil_ok += ceil_r.back() >= 1.8;
          lib_ok += lib_r.back() >= 1.8;
        }
        auto lo = [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); };
        printf("ceiling %-8s %-6s T=%-6lld ns/row min/median: 1T alone %.1f/%.1f, 2 routers at once (aggregate) %.1f/%.1f, "
               "library 2T %.1f/%.1f | speedup over 1T, median of %d rounds: machine %.2fx (>= 1.8x in %d), library %.2fx "
               "(>= 1.8x in %d); from the mins: machine %.2fx, library %.2fx\n",
               c.name, call, (long long)tokens, lo(alone), median(alone), lo(both), median(both), lo(lib), median(lib), reps,
               median(ceil_r), ceil_ok, median(lib_r), lib_ok, lo(alone) / lo(both), lo(alone) / lo(lib));
      }
      for (moe_router* o : own) moe_router_destroy(o);
    }
    moe_router_destroy(r);
  }
  return 0;
}
