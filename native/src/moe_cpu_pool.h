// SPDX-License-Identifier: Apache-2.0
// The CPU backend's worker pool: one per process, shared by every CPU router. No allocation per call,
// the caller thread takes part, and a call that finds the pool busy (another thread's parallel call)
// runs serially on its own thread, which is as correct and keeps that core busy too.
#ifndef MOE_CPU_POOL_H_
#define MOE_CPU_POOL_H_

#include <stdint.h>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#include "moe_cpu_fpenv.h"
#if defined(__linux__)
#include <sys/prctl.h>
#endif

namespace moe {

class CpuPool {
 public:
  using Body = void (*)(void* ctx, int64_t begin, int64_t end);

  // Threads start at the first parallel call, not here: creating routers (or loading the library)
  // costs no threads.
  explicit CpuPool(int threads) : wanted_(threads < 1 ? 1 : threads) {}

  ~CpuPool() { stop_workers(); }

  // Threads per parallel call, the caller included. Takes effect at the next parallel call, which
  // finds no other parallel call running (it holds call_mu_), so idle workers can be replaced.
  void set_threads(int threads) { wanted_.store(threads < 1 ? 1 : threads, std::memory_order_relaxed); }
  int threads() const { return wanted_.load(std::memory_order_relaxed); }

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
    {
      std::lock_guard<std::mutex> lock(mu_);
      body_ = body;
      ctx_ = ctx;
      n_ = n;
      grain_ = grain;
      next_.store(0, std::memory_order_relaxed);
      busy_ = (int)workers_.size();
      ++generation_;
    }
    wake_.notify_all();
    drain();
    {
      std::unique_lock<std::mutex> lock(mu_);
      done_.wait(lock, [this] { return busy_ == 0; });
    }
    call_mu_.unlock();
  }

 private:
  // Caller holds call_mu_, so every worker is idle in wake_.wait.
  void resize_workers() {
    size_t want = (size_t)threads() - 1;
    if (workers_.size() == want) return;
    stop_workers();
    std::lock_guard<std::mutex> lock(mu_);
    try {
      for (size_t i = 0; i < want; ++i) workers_.emplace_back([this, g = generation_] { work(g); });
    } catch (...) {
      // Out of threads (ulimit, memory): run with the workers that did start.
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
  }

  void drain() {
    for (;;) {
      int64_t b = next_.fetch_add(grain_, std::memory_order_relaxed);
      if (b >= n_) return;
      body_(ctx_, b, b + grain_ < n_ ? b + grain_ : n_);
    }
  }

  // `seen`: the generation at start, so a worker started after earlier calls does not run a stale one.
  void work(uint64_t seen) {
#if defined(__linux__)
    // Findable in top -H and /proc/PID/task. prctl, not pthread_setname_np: that one is GLIBC_2.34 on new
    // glibc, above the library's compatibility floor (NativeCompatibilityTest).
    prctl(PR_SET_NAME, "moe-router-cpu", 0, 0, 0);
#endif
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
      }
      {
        FpEnvGuard fp;  // the caller's thread installed its own; a worker's state is its creator's
        drain();
      }
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--busy_ == 0) done_.notify_one();
      }
    }
  }

  std::atomic<int> wanted_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one parallel call at a time
  std::mutex mu_;
  std::condition_variable wake_, done_;
  uint64_t generation_ = 0;
  bool stop_ = false;
  int busy_ = 0;
  Body body_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
  std::atomic<int64_t> next_{0};
};

}  // namespace moe

#endif  // MOE_CPU_POOL_H_
