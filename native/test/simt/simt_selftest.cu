// SPDX-License-Identifier: Apache-2.0
// Self-test of the SIMT emulation (include/cuda_runtime.h, simt_runtime.cpp): the semantics the
// kernel checks rely on. Compiled through simt_transform.cmake like the kernels, so the <<<>>> and
// extern __shared__ rewrites are exercised here too. Exit status 0 = pass.
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <vector>

namespace {

int g_failures = 0, g_checks = 0;

#define EXPECT(cond, ...)                          \
  do {                                             \
    ++g_checks;                                    \
    if (!(cond)) {                                 \
      ++g_failures;                                \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                \
      fprintf(stderr, "\n");                       \
    }                                              \
  } while (0)

#define OK(expr) EXPECT((expr) == cudaSuccess, "%s: %s", #expr, cudaGetErrorName(expr))

// ------------------------------------------------------------------------------ kernels
__global__ void shuffles(int width, unsigned* out) {
  const unsigned lane = threadIdx.x & 31;
  const unsigned v = lane * 10 + 1;
  out[0 * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, 1, width);
  out[1 * 32 + lane] = __shfl_sync(0xffffffffu, v, 3, width);
  out[2 * 32 + lane] = __shfl_up_sync(0xffffffffu, v, 2, width);
  out[3 * 32 + lane] = __shfl_down_sync(0xffffffffu, v, 2, width);
  out[4 * 32 + lane] = __shfl_xor_sync(0xffffffffu, v, 16, width);
}

__global__ void votes(unsigned* out) {
  const int lane = threadIdx.x & 31;
  out[0] = __ballot_sync(0xffffffffu, lane % 3 == 0);
  out[1] = __any_sync(0xffffffffu, lane == 17);
  out[2] = __all_sync(0xffffffffu, lane < 31);
  out[3] = __reduce_add_sync(0xffffffffu, (unsigned)lane);
  out[4] = (unsigned)__reduce_min_sync(0xffffffffu, 5 - lane);
  out[5 + lane] = __match_any_sync(0xffffffffu, lane / 8);
  if (lane < 16) {  // a half-warp collective: only the named lanes take part
    out[37 + lane] = __shfl_xor_sync(0x0000ffffu, (unsigned)lane, 4);
  }
}

__global__ void barriers(int* out) {
  const int t = threadIdx.x;
  const int any = __syncthreads_or(t == 77);
  const int cnt = __syncthreads_count(t % 4 == 0);
  const int all = __syncthreads_and(t < 1000);
  if (t == 0) {
    out[0] = any;
    out[1] = cnt;
    out[2] = all;
  }
}

// Reverse through shared memory: correct only with the barrier between the writes and the reads.
__global__ void reverse_block(const int* in, int* out, int with_barrier) {
  extern __shared__ int tile[];
  const int t = threadIdx.x, n = blockDim.x;
  tile[t] = in[blockIdx.x * n + t];
  if (with_barrier) __syncthreads();
  out[blockIdx.x * n + t] = tile[n - 1 - t];
}

template <typename T, int N>
__global__ void fill(T* p, int count, T v) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) p[i] = v + (T)N;
}

__global__ void add_one(int* p, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) p[i] += 1;
}

__global__ void divergent_shuffle(int* out) {
  const int lane = threadIdx.x & 31;
  if (lane >= 16) return;  // lanes 16-31 exit; the full-mask shuffle can never complete
  out[lane] = __shfl_xor_sync(0xffffffffu, lane, 1);
}

// Lanes 32-47 wait at the barrier while lanes 48-63 wait for them at a full-warp shuffle.
__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 48) {
    __syncthreads();
    out[0] = 1;
  } else {
    out[1] = __shfl_sync(0xffffffffu, 1, 0);
  }
}

__global__ void overrun(int* p, int n) { p[n + 1024] = 1; }

void host_log(void* p) {
  auto* v = static_cast<std::pair<std::vector<int>*, int>*>(p);
  v->first->push_back(v->second);
}

std::atomic<int> g_destroyed{0};
void on_destroy(void*) { ++g_destroyed; }

// Runs `body` in a child process and expects it to stop with the SIMT failure status and a message.
void expect_failure(const char* what, const char* needle, void (*body)()) {
  int pipefd[2];
  if (pipe(pipefd) != 0) abort();
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 2);
    close(pipefd[0]);
    body();
    _exit(0);
  }
  close(pipefd[1]);
  std::string err;
  char buf[512];
  ssize_t n;
  while ((n = read(pipefd[0], buf, sizeof buf)) > 0) err.append(buf, (size_t)n);
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 86, "%s: child status %d, expected exit 86", what, status);
  EXPECT(err.find(needle) != std::string::npos, "%s: report lacks '%s':\n%s", what, needle, err.c_str());
  if (getenv("SIMT_SELFTEST_VERBOSE")) printf("  %s:\n%s", what, err.c_str());
}

template <typename T>
std::vector<T> down(const T* d, size_t n) {
  std::vector<T> h(n);
  cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost);
  return h;
}

// ------------------------------------------------------------------------------ tests
void test_shuffles() {
  unsigned* d;
  OK(cudaMalloc(&d, 5 * 32 * sizeof(unsigned)));
  for (int width : {32, 16, 8}) {
    shuffles<<<1, 32>>>(width, d);
    std::vector<unsigned> h = down(d, 5 * 32);
    for (int lane = 0; lane < 32; ++lane) {
      const int seg = lane & ~(width - 1), lim = seg + width - 1;
      auto v = [](int l) { return (unsigned)(l * 10 + 1); };
      EXPECT(h[lane] == v(lane ^ 1), "xor width %d lane %d", width, lane);
      EXPECT(h[32 + lane] == v(seg + 3), "idx width %d lane %d", width, lane);
      EXPECT(h[64 + lane] == v(lane - 2 >= seg ? lane - 2 : lane), "up width %d lane %d", width, lane);
      EXPECT(h[96 + lane] == v(lane + 2 <= lim ? lane + 2 : lane), "down width %d lane %d", width, lane);
      // PTX bfly: lane ^ 16 is taken when it is <= the segment's last lane, even across segments.
      EXPECT(h[128 + lane] == v((lane ^ 16) <= lim ? lane ^ 16 : lane), "xor 16 width %d lane %d", width, lane);
    }
  }
  OK(cudaFree(d));
}

void test_votes_and_barriers() {
  unsigned* d;
  OK(cudaMalloc(&d, 64 * sizeof(unsigned)));
  votes<<<1, 32>>>(d);
  std::vector<unsigned> h = down(d, 64);
  unsigned ballot = 0;
  for (int l = 0; l < 32; l += 3) ballot |= 1u << l;
  EXPECT(h[0] == ballot, "ballot %08x", h[0]);
  EXPECT(h[1] == 1 && h[2] == 0, "any/all %u %u", h[1], h[2]);
  EXPECT(h[3] == 496, "reduce_add %u", h[3]);
  EXPECT((int)h[4] == 5 - 31, "reduce_min (signed) %d", (int)h[4]);
  for (int l = 0; l < 32; ++l) EXPECT(h[5 + l] == 0xffu << (l / 8 * 8), "match_any lane %d: %08x", l, h[5 + l]);
  for (int l = 0; l < 16; ++l) EXPECT(h[37 + l] == (unsigned)(l ^ 4), "half-warp shuffle lane %d", l);
  int* b;
  OK(cudaMalloc(&b, 3 * sizeof(int)));
  barriers<<<1, 160>>>(b);
  std::vector<int> hb = down(b, 3);
  EXPECT(hb[0] == 1 && hb[1] == 40 && hb[2] == 1, "syncthreads or/count/and %d %d %d", hb[0], hb[1], hb[2]);
  OK(cudaFree(d));
  OK(cudaFree(b));
}

// A missing barrier gives an order-dependent result: forward and reverse orders disagree.
void test_missing_barrier_shows() {
  const int n = 64, blocks = 3;
  std::vector<int> in(n * blocks);
  for (int i = 0; i < n * blocks; ++i) in[i] = i;
  int *din, *dout;
  OK(cudaMalloc(&din, in.size() * 4));
  OK(cudaMalloc(&dout, in.size() * 4));
  OK(cudaMemcpy(din, in.data(), in.size() * 4, cudaMemcpyHostToDevice));
  for (int barrier = 1; barrier >= 0; --barrier) {
    reverse_block<<<blocks, n, n * sizeof(int)>>>(din, dout, barrier);
    std::vector<int> h = down(dout, in.size());
    int wrong = 0;
    for (int b = 0; b < blocks; ++b)
      for (int t = 0; t < n; ++t) wrong += h[b * n + t] != b * n + (n - 1 - t);
    if (barrier)
      EXPECT(wrong == 0, "reverse with barrier: %d wrong", wrong);
    else if (strcmp(simt::order_name(), "forward") != 0)  // forward runs thread 0 first: half the reads are stale
      EXPECT(wrong > 0, "reverse without barrier passed in order %s", simt::order_name());
    else
      EXPECT(wrong > 0, "reverse without barrier passed in forward order");
  }
  OK(cudaFree(din));
  OK(cudaFree(dout));
}

void test_launch_forms_and_errors() {
  float* f;
  OK(cudaMalloc(&f, 1000 * sizeof(float)));
  cudaStream_t s;
  OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  fill<float, 2><<<dim3(3, 1, 1), 64, 0, s>>>(f, 1000,
                                               0.5f);  // a template kernel, args over two lines
  OK(cudaStreamSynchronize(s));
  std::vector<float> h = down(f, 1000);
  EXPECT(h[0] == 2.5f && h[999] == 2.5f, "template launch: %g %g", h[0], h[999]);
  // An invalid configuration is reported by cudaGetLastError (and only once), as for <<<>>>.
  EXPECT(cudaGetLastError() == cudaSuccess, "no pending error");
  fill<float, 0><<<1, 2048>>>(f, 10, 1.0f);
  EXPECT(cudaPeekAtLastError() == cudaErrorInvalidConfiguration, "peek: %s", cudaGetErrorName(cudaPeekAtLastError()));
  EXPECT(cudaGetLastError() == cudaErrorInvalidConfiguration, "get");
  EXPECT(cudaGetLastError() == cudaSuccess, "get clears");
  fill<float, 0><<<1, 32, 64 << 10>>>(f, 10, 1.0f);  // > 48 KB dynamic shared memory without the attribute
  EXPECT(cudaGetLastError() == cudaErrorInvalidValue, "smem limit");
  OK(cudaFuncSetAttribute(fill<float, 0>, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10));
  fill<float, 0><<<1, 32, 64 << 10>>>(f, 10, 1.0f);
  EXPECT(cudaGetLastError() == cudaSuccess, "smem limit raised");
  OK(cudaDeviceSynchronize());  // cudaFree below does not wait for queued work
  // Copies are checked against the allocation: direction and bounds.
  std::vector<float> host(1000);
  EXPECT(cudaMemcpy(f, host.data(), 1000 * 4, cudaMemcpyDeviceToHost) == cudaErrorInvalidMemcpyDirection, "direction");
  EXPECT(cudaMemcpy(f, host.data(), 1001 * 4, cudaMemcpyHostToDevice) == cudaErrorInvalidValue, "bounds");
  cudaGetLastError();
  OK(cudaStreamDestroy(s));
  EXPECT(cudaStreamSynchronize(s) == cudaErrorInvalidResourceHandle, "destroyed stream handle");
  cudaGetLastError();
  OK(cudaFree(f));
  EXPECT(cudaMemset(f, 0, 4) == cudaErrorInvalidValue, "memset of freed memory");
  cudaGetLastError();
}

// Streams are queues: nothing runs before a wait, and concurrent streams interleave.
void test_streams_and_events() {
  std::vector<int> log;
  std::pair<std::vector<int>*, int> tags[6] = {{&log, 1}, {&log, 2}, {&log, 3}, {&log, 11}, {&log, 12}, {&log, 13}};
  cudaStream_t a, b;
  OK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking));
  OK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking));
  for (int i = 0; i < 3; ++i) {
    OK(cudaLaunchHostFunc(a, host_log, &tags[i]));
    OK(cudaLaunchHostFunc(b, host_log, &tags[3 + i]));
  }
  EXPECT(log.empty(), "work ran before anyone waited");
  OK(cudaDeviceSynchronize());
  EXPECT(log.size() == 6, "all ran");
  bool interleaved = false;
  for (size_t i = 1; i < log.size(); ++i) interleaved |= (log[i] > 10) != (log[i - 1] > 10);
  EXPECT(interleaved, "two streams did not interleave");
  for (int i = 0; i + 1 < (int)log.size(); ++i)
    for (int j = i + 1; j < (int)log.size(); ++j)
      if ((log[i] > 10) == (log[j] > 10)) EXPECT(log[i] < log[j], "stream order broken");
  // An event orders b after a's work.
  log.clear();
  cudaEvent_t e;
  OK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  OK(cudaLaunchHostFunc(a, host_log, &tags[0]));
  OK(cudaLaunchHostFunc(a, host_log, &tags[1]));
  OK(cudaEventRecord(e, a));
  OK(cudaStreamWaitEvent(b, e, 0));
  OK(cudaLaunchHostFunc(b, host_log, &tags[3]));
  OK(cudaStreamSynchronize(b));
  EXPECT(log.size() >= 3 && log.back() == 11, "event wait: b ran before a");
  OK(cudaDeviceSynchronize());
  // The legacy stream waits for blocking streams (not for non-blocking ones).
  cudaStream_t blocking;
  OK(cudaStreamCreate(&blocking));
  int* d;
  OK(cudaMalloc(&d, 64 * 4));
  OK(cudaMemsetAsync(d, 0, 64 * 4, blocking));
  add_one<<<1, 32, 0, blocking>>>(d, 64);
  std::vector<int> h(64, -5);
  OK(cudaMemcpy(h.data(), d, 64 * 4, cudaMemcpyDeviceToHost));  // legacy: after the blocking stream's work
  EXPECT(h[0] == 1 && h[63] == 1, "legacy stream did not wait: %d", h[0]);
  OK(cudaFree(d));
  OK(cudaEventDestroy(e));
  OK(cudaStreamDestroy(a));
  OK(cudaStreamDestroy(b));
  OK(cudaStreamDestroy(blocking));
}

void test_capture() {
  cudaStream_t s, s2;
  OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  OK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
  int* d;
  OK(cudaMalloc(&d, 100 * 4));
  OK(cudaMemset(d, 0, 100 * 4));
  cudaGraph_t g;
  cudaGraphExec_t x;
  OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  cudaStreamCaptureStatus st;
  OK(cudaStreamIsCapturing(s, &st));
  EXPECT(st == cudaStreamCaptureStatusActive, "capturing");
  add_one<<<2, 32, 0, s>>>(d, 100);
  cudaUserObject_t obj;
  OK(cudaUserObjectCreate(&obj, nullptr, on_destroy, 1, cudaUserObjectNoDestructorSync));
  cudaGraph_t in_capture = nullptr;
  OK(cudaStreamGetCaptureInfo(s, &st, nullptr, &in_capture));
  OK(cudaGraphRetainUserObject(in_capture, obj, 1, cudaGraphUserObjectMove));
  OK(cudaStreamEndCapture(s, &g));
  EXPECT(g == in_capture, "the captured graph is the one reported during capture");
  OK(cudaGraphInstantiate(&x, g, 0));
  std::vector<int> h = down(d, 100);
  EXPECT(h[0] == 0, "capture must not execute");
  OK(cudaGraphLaunch(x, s));
  OK(cudaGraphLaunch(x, s2));  // launches of one exec are serialised across streams
  OK(cudaDeviceSynchronize());
  h = down(d, 100);
  EXPECT(h[0] == 2 && h[99] == 2, "graph launched twice: %d", h[0]);
  OK(cudaGraphDestroy(g));
  OK(cudaDeviceSynchronize());
  usleep(20000);
  EXPECT(g_destroyed == 0, "user object destroyed while the exec lives");
  OK(cudaGraphExecDestroy(x));
  for (int i = 0; i < 200 && g_destroyed == 0; ++i) usleep(5000);
  EXPECT(g_destroyed == 1, "user object not destroyed with the last graph");

  // Unsafe calls during a global-mode capture fail and invalidate it.
  OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  void* p = nullptr;
  EXPECT(cudaMalloc(&p, 16) == cudaErrorStreamCaptureUnsupported, "cudaMalloc during capture");
  EXPECT(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && g == nullptr, "invalidated capture");
  OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  EXPECT(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported, "sync of a capturing stream");
  EXPECT(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated, "invalidated by sync");
  // Waiting on an event recorded outside the capture crosses its boundary.
  cudaEvent_t outside;
  OK(cudaEventCreate(&outside));
  OK(cudaEventRecord(outside, s2));
  OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  EXPECT(cudaStreamWaitEvent(s, outside, 0) == cudaErrorStreamCaptureIsolation, "isolation");
  EXPECT(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated, "invalidated by isolation");
  // Fork and join through events; forgetting the join fails the capture.
  cudaEvent_t fork, join;
  OK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
  OK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
  for (int joined = 1; joined >= 0; --joined) {
    OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    OK(cudaEventRecord(fork, s));
    OK(cudaStreamWaitEvent(s2, fork, 0));
    add_one<<<1, 32, 0, s2>>>(d, 100);
    if (joined) {
      OK(cudaEventRecord(join, s2));
      OK(cudaStreamWaitEvent(s, join, 0));
      OK(cudaStreamEndCapture(s, &g));
      OK(cudaGraphDestroy(g));
    } else {
      EXPECT(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureUnjoined, "unjoined fork");
    }
  }
  cudaGetLastError();
  OK(cudaFree(d));
  OK(cudaStreamDestroy(s));
  OK(cudaStreamDestroy(s2));
}

void run_divergent_shuffle() {
  int* d;
  cudaMalloc(&d, 128);
  divergent_shuffle<<<1, 32>>>(d);
  cudaDeviceSynchronize();
}
void run_divergent_barrier() {
  int* d;
  cudaMalloc(&d, 128);
  divergent_barrier<<<1, 64>>>(d);
  cudaDeviceSynchronize();
}
void run_overrun() {
  int* d;
  cudaMalloc(&d, 100 * 4);
  overrun<<<1, 1>>>(d, 100);
  cudaDeviceSynchronize();
}
void run_use_after_free() {
  int* d;
  cudaMalloc(&d, 100 * 4);
  cudaStream_t s;
  cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  add_one<<<1, 32, 0, s>>>(d, 100);
  cudaFree(d);  // not a synchronising call: the queued kernel runs on freed memory
  cudaStreamSynchronize(s);
}

}  // namespace

int main() {
  test_shuffles();
  test_votes_and_barriers();
  test_missing_barrier_shows();
  test_launch_forms_and_errors();
  test_streams_and_events();
  test_capture();
  expect_failure("divergent shuffle", "lane 16, which has exited: it can never complete", run_divergent_shuffle);
  expect_failure("divergent barrier", "no thread can proceed", run_divergent_barrier);
  expect_failure("out-of-bounds write", "past the end of the 400-byte allocation", run_overrun);
  expect_failure("use after free", "use after free", run_use_after_free);
  printf("SIMT self-test: %d checks, %d failures (order %s)\n", g_checks, g_failures, simt::order_name());
  return g_failures ? 1 : 0;
}
