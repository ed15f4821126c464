// SPDX-License-Identifier: Apache-2.0
// A small persistent worker pool for the CPU backend: no allocation per call, the caller
// thread takes part, and a call that finds the pool busy (another Java thread) runs serially.
#ifndef MOE_CPU_POOL_H_
#define MOE_CPU_POOL_H_

#include <stdint.h>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace moe {

class CpuPool {
 public:
  using Body = void (*)(void* ctx, int64_t begin, int64_t end);

  explicit CpuPool(int threads) {
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { work(); });
  }

  ~CpuPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
  }

  int threads() const { return (int)workers_.size() + 1; }

  // Runs body over [0, n) in chunks of `grain`.
  void run(int64_t n, int64_t grain, Body body, void* ctx) {
    if (n <= 0) return;
    if (workers_.empty() || n <= grain || !call_mu_.try_lock()) {
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
  void drain() {
    for (;;) {
      int64_t b = next_.fetch_add(grain_, std::memory_order_relaxed);
      if (b >= n_) return;
      body_(ctx_, b, b + grain_ < n_ ? b + grain_ : n_);
    }
  }

  void work() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
      }
      drain();
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (--busy_ == 0) done_.notify_one();
      }
    }
  }

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
