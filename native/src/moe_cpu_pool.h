// SPDX-License-Identifier: Apache-2.0
// The CPU backend's worker pool: one per process, shared by every CPU router. No allocation per call,
// the caller thread takes part, and a call that finds the pool busy (another thread's parallel call)
// runs serially on its own thread, which is as correct and keeps that core busy too.
//
// Hand-off (docs/cpu-design.md, "Pool hand-off"): on this kind of VM waking a sleeping thread costs tens of
// microseconds, as much as a whole 4096-row replay call. So a worker that finishes a job spins (pause
// instructions) for a bounded time, MOE_ROUTER_CPU_SPIN_US, before it sleeps: back-to-back calls (an
// engine's layer loop, a benchmark) find it awake, and an idle process sleeps once the bound has passed. The
// caller never waits for a worker that has not started: it waits only for chunks a worker has claimed, so a
// call whose worker wakes late runs on the caller alone, as fast as a one-thread call.
#ifndef MOE_CPU_POOL_H_
#define MOE_CPU_POOL_H_

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#include "moe_cpu_fpenv.h"
#if defined(__linux__)
#include <sys/prctl.h>
#endif

namespace moe {

// Spin bound of idle workers, microseconds: default, and the largest MOE_ROUTER_CPU_SPIN_US accepted.
constexpr int64_t kPoolSpinDefaultUs = 100;
constexpr int64_t kPoolSpinMaxUs = 1000000;

// MOE_ROUTER_CPU_SPIN_US parsed: a decimal integer 0..kPoolSpinMaxUs (0: sleep at once, as before the
// spin). Anything else (empty, a sign, a fraction, trailing characters, out of range) gives the default,
// with one line on stderr naming the variable, its value and the rule: a typo must not turn into an
// unbounded spin or a silent change of behaviour.
inline int64_t parse_pool_spin_us(const char* v, bool warn) {
  if (!v) return kPoolSpinDefaultUs;
  int64_t x = 0;
  const char* s = v;
  for (; *s >= '0' && *s <= '9' && x <= kPoolSpinMaxUs; ++s) x = x * 10 + (*s - '0');
  if (s == v || *s != '\0' || x > kPoolSpinMaxUs) {
    if (warn)
      fprintf(stderr,
              "moe-router: MOE_ROUTER_CPU_SPIN_US=\"%s\" ignored: must be an integer number of microseconds "
              "0..%lld; using the default %lld\n",
              v, (long long)kPoolSpinMaxUs, (long long)kPoolSpinDefaultUs);
    return kPoolSpinDefaultUs;
  }
  return x;
}

// The environment's spin bound, read (and any warning printed) once per process.
inline int64_t pool_spin_us_from_env() {
  static const int64_t us = parse_pool_spin_us(getenv("MOE_ROUTER_CPU_SPIN_US"), true);
  return us;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}

class CpuPool {
 public:
  using Body = void (*)(void* ctx, int64_t begin, int64_t end);

  // Threads start at the first parallel call, not here: creating routers (or loading the library)
  // costs no threads.
  explicit CpuPool(int threads)
      : wanted_(threads < 1 ? 1 : threads),
        spin_ns_(1000 * pool_spin_us_from_env()) {}

  ~CpuPool() { stop_workers(); }

  // Threads per parallel call, the caller included. Takes effect at the next parallel call, which
  // finds no other parallel call running (it holds call_mu_), so idle workers can be replaced.
  void set_threads(int threads) { wanted_.store(threads < 1 ? 1 : threads, std::memory_order_relaxed); }
  int threads() const { return wanted_.load(std::memory_order_relaxed); }

  // How long an idle worker (and a caller waiting for a worker's chunk) spins before it sleeps.
  void set_spin_us(int64_t us) { spin_ns_.store(1000 * (us < 0 ? 0 : us > kPoolSpinMaxUs ? kPoolSpinMaxUs : us)); }
  int64_t spin_us() const { return spin_ns_.load(std::memory_order_relaxed) / 1000; }

  // Runs body over [0, n) in chunks of `grain`.
  void run(int64_t n, int64_t grain, Body body, void* ctx) {
    if (n <= 0) return;
    if (n <= grain || !call_mu_.try_lock()) {
      body(ctx, 0, n);
      return;
    }
    resize_workers();
    if (workers_.empty()) {  // one thread per call (or thread creation failed): still correct, just serial
      call_mu_.unlock();
      body(ctx, 0, n);
      return;
    }
    // No worker is inside a job here (the last call waited for inside_ == 0), so the fields are ours.
    body_ = body;
    ctx_ = ctx;
    n_ = n;
    grain_ = grain;
    chunks_ = (n + grain - 1) / grain;
    next_.store(0, std::memory_order_relaxed);
    finished_.store(0, std::memory_order_relaxed);
    active_.store(true);  // seq_cst: publishes the fields to a worker that reads it true
    generation_.fetch_add(1);
    if (sleeping_.load() > 0) {
      { std::lock_guard<std::mutex> lock(mu_); }  // a worker between its check and its wait is now waiting
      wake_.notify_all();
    }
    drain();
    // Only chunks a worker claimed are outstanding: at most one per worker, already running.
    await([this] { return finished_.load() == chunks_; });
    active_.store(false);
    // A worker that entered late (it found active_ true, then nothing to claim) leaves at once.
    await([this] { return inside_.load() == 0; });
    call_mu_.unlock();
  }

 private:
  // Caller holds call_mu_ and no job is active, so every worker is idle (spinning or asleep).
  void resize_workers() {
    size_t want = (size_t)threads() - 1;
    if (workers_.size() == want) return;
    stop_workers();
    started_.store(0);
    try {
      for (size_t i = 0; i < want; ++i) workers_.emplace_back([this, g = generation_.load()] { work(g); });
    } catch (...) {
      // Out of threads (ulimit, memory): run with the workers that did start.
    }
    // Calls no longer wait for a worker that has not begun, so a new one could still be unnamed (and
    // unscheduled) when the call that made it returns; once per resize, wait until each has begun.
    while (started_.load() < (int)workers_.size()) std::this_thread::yield();
  }

  void stop_workers() {
    stop_.store(true);
    generation_.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(mu_);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_.store(false);
  }

  void drain() {
    for (;;) {
      const int64_t c = next_.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks_) return;
      const int64_t b = c * grain_;
      body_(ctx_, b, b + grain_ < n_ ? b + grain_ : n_);
      if (finished_.fetch_add(1) + 1 == chunks_) notify_caller();
    }
  }

  void notify_caller() {
    if (caller_sleeping_.load()) {
      { std::lock_guard<std::mutex> lock(mu_); }
      done_.notify_one();
    }
  }

  // Spins up to the bound, then sleeps on `cv` counted in `sleepers`; `ready` must read seq_cst atomics
  // (the sleeper count and the ready state form a Dekker pair with the notifier's store-then-check).
  template <class Ready>
  void spin_then_wait(Ready ready, std::condition_variable& cv, std::atomic<int>& sleepers) {
    if (ready()) return;
    const int64_t spin = spin_ns_.load(std::memory_order_relaxed);
    if (spin > 0) {
      const auto t0 = std::chrono::steady_clock::now();
      for (uint32_t i = 1;; ++i) {
        cpu_relax();
        if (ready()) return;
        if ((i & 63) == 0 && std::chrono::steady_clock::now() - t0 > std::chrono::nanoseconds(spin)) break;
      }
    }
    std::unique_lock<std::mutex> lock(mu_);
    sleepers.fetch_add(1);
    cv.wait(lock, ready);
    sleepers.fetch_sub(1);
  }

  // The caller, for the end of its job.
  template <class Ready>
  void await(Ready ready) { spin_then_wait(ready, done_, caller_sleeping_); }

  void sleep_until_job(uint64_t seen) {
    spin_then_wait([&] { return generation_.load() != seen; }, wake_, sleeping_);
  }

  // `seen`: the generation at start, so a worker started after earlier calls does not run a stale one.
  void work(uint64_t seen) {
#if defined(__linux__)
    // Findable in top -H and /proc/PID/task. prctl, not pthread_setname_np: that one is GLIBC_2.34 on new
    // glibc, above the library's compatibility floor (NativeCompatibilityTest).
    prctl(PR_SET_NAME, "moe-router-cpu", 0, 0, 0);
#endif
    started_.fetch_add(1);
    for (;;) {
      sleep_until_job(seen);
      seen = generation_.load();
      if (stop_.load()) return;
      inside_.fetch_add(1);
      if (active_.load()) {  // else the job ended before this worker got to it
        FpEnvGuard fp;  // the caller's thread installed its own; a worker's state is its creator's
        drain();
      }
      if (inside_.fetch_sub(1) == 1) notify_caller();
    }
  }

  std::atomic<int> wanted_;
  std::atomic<int64_t> spin_ns_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one parallel call at a time
  std::mutex mu_;       // only for sleeping: every job field is an atomic or written with no worker inside
  std::condition_variable wake_, done_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false}, active_{false};
  std::atomic<int> sleeping_{0}, caller_sleeping_{0}, inside_{0}, started_{0};
  Body body_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0, grain_ = 1, chunks_ = 0;
  std::atomic<int64_t> next_{0}, finished_{0};
};

}  // namespace moe

#endif  // MOE_CPU_POOL_H_
