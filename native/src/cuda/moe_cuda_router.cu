// SPDX-License-Identifier: Apache-2.0
// CUDA backend entry points (moe_internal.h): router state, device-pointer calls (asynchronous,
// graph-capturable: memsets, kernels and event operations only), host-staging variants, replay
// error reporting.
//
// Concurrency design (any number of threads, streams and graph launches on one router):
// - Per-call state never lives in a per-router slot. A validated device-pointer call (replay,
//   backward) writes its verdict into a slot that no other call in flight uses:
//   * uncaptured calls take the next of kCallSlots ring slots; the call first makes its stream wait
//     for the router-owned event recorded after the slot's previous user, and records that event
//     after its own kernels. Slot choice and enqueue happen under enqueue_mu, so the event always
//     covers the slot's latest user. No host wait, no allocation.
//   * captured calls take a graph slot, owned by the graph through a CUDA user object until the
//     graph and its executables are destroyed (launches of one executable graph are serialised by
//     CUDA, so its launches may share it); no event enters the capture.
// - The router keeps no caller stream. Waiting for "every call enqueued so far" (destroy, set_bias,
//   check_replay) means synchronising the kCallSlots router-owned events: the latest user of each
//   slot waited for the earlier ones. Graph launches are the caller's to synchronise.
// - check_replay takes the router error slot with one atomic exchange on the device.
// - Validated calls: replay and backward (indices checked on the device), and every call of a router
//   with non-finite policy ERROR (moe_nonfinite_kernel.cu scans what the call reads). A rejected call
//   writes nothing; check_replay reports it (an invalid replay row before any non-finite row, as the
//   CPU backend checks the indices first). The host variants report synchronously with the CPU
//   backend's messages: indices checked on the host, the non-finite scan run on the device first
//   and read back before anything else is enqueued.
// - The CUDA error state of the calling thread is left as it was found: launches return their
//   own error (launch_kernel), and an entry point that found no pending error clears what its own
//   failed calls left (ErrorStateScope). An error the application left pending stays pending.
#include <new>

#include "moe_cuda_common.cuh"
#include "moe_training.cuh"

namespace moe {
namespace {

int cuda_fail(cudaError_t e, const char* what) {
  return fail(MOE_ERR_CUDA, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

#define MOE_CUDA_TRY(expr, what)                           \
  do {                                                     \
    cudaError_t err_ = (expr);                             \
    if (err_ != cudaSuccess) return cuda_fail(err_, what); \
  } while (0)

// Restores the thread's "no pending CUDA error" state on exit if it held on entry: the library
// reports its failures through its own status, never through cudaGetLastError.
class ErrorStateScope {
 public:
  ErrorStateScope() : clean_(cudaPeekAtLastError() == cudaSuccess) {}
  ~ErrorStateScope() {
    if (clean_) (void)cudaGetLastError();
  }

 private:
  bool clean_;
};

// Makes the router's device current for the scope of a call and restores the caller's.
class DeviceScope {
 public:
  explicit DeviceScope(int device) : target_(device) {
    if (cudaGetDevice(&prev_) != cudaSuccess) prev_ = -1;
    status_ = prev_ == target_ ? cudaSuccess : cudaSetDevice(target_);
  }
  ~DeviceScope() {
    if (prev_ >= 0 && prev_ != target_) cudaSetDevice(prev_);
  }
  cudaError_t status() const { return status_; }

 private:
  int target_;
  int prev_ = -1;
  cudaError_t status_;
};

// What a host-staged call (route, backward, check_replay) holds while it runs: the caller's error state
// kept, the staging buffers and host stream (staging_mu), and the router's device.
struct StagingScope {
  ErrorStateScope errors;
  std::lock_guard<std::mutex> lock;
  DeviceScope device;
  explicit StagingScope(CudaState* s) : lock(s->staging_mu), device(s->device) {}
};

// Grows a staging buffer (host variants only: allocation is allowed there).
cudaError_t ensure(CudaState::Buf& b, size_t bytes) {
  if (bytes <= b.cap) return cudaSuccess;
  if (b.p) cudaFree(b.p);
  b.p = nullptr;
  b.cap = 0;
  size_t want = bytes + bytes / 2;
  want = (want + 255) & ~(size_t)255;
  cudaError_t e = cudaMalloc(&b.p, want);
  if (e != cudaSuccess) {
    b.p = nullptr;
    return e;
  }
  b.cap = want;
  return cudaSuccess;
}

void free_buf(CudaState::Buf& b) {
  if (b.p) cudaFree(b.p);
  b.p = nullptr;
  b.cap = 0;
}

// The graph user object's destructor (an internal CUDA thread; no CUDA calls): the slot is free again.
struct GraphSlotRef {
  GraphSlotPool* pool;
  int slot;
};

void release_graph_slot(void* p) {
  GraphSlotRef* ref = static_cast<GraphSlotRef*>(p);
  {
    std::lock_guard<std::mutex> lock(ref->pool->mu);
    ref->pool->free.push_back(ref->slot);
  }
  ref->pool->release();
  delete ref;
}

// A direct or captured device-pointer call in progress (see the head comment). Caller holds enqueue_mu.
struct Call {
  unsigned long long* verdict = nullptr;  // this call's slot (validated calls)
  int ring = -1;                          // ring slot whose event to record at the end
};

int begin_call(CudaState* s, cudaStream_t stream, bool validated, Call* call) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  cudaGraph_t graph = nullptr;
  MOE_CUDA_TRY(cudaStreamGetCaptureInfo(stream, &status, nullptr, &graph), "stream capture query");
  if (status == cudaStreamCaptureStatusInvalidated)
    return cuda_fail(cudaErrorStreamCaptureInvalidated, "the stream's capture was already invalidated");
  if (status == cudaStreamCaptureStatusActive) {
    if (!validated) return MOE_OK;
    int slot;
    {
      std::lock_guard<std::mutex> lock(s->graph_slots->mu);
      if (s->graph_slots->free.empty())
        return fail(MOE_ERR_OUT_OF_MEMORY,
                    "captured replay/backward calls: all %d graph slots of this router are owned by live graphs "
                    "(destroy unused graphs and executables)",
                    kGraphSlots);
      slot = s->graph_slots->free.back();
      s->graph_slots->free.pop_back();
    }
    GraphSlotRef* ref = new (std::nothrow) GraphSlotRef{s->graph_slots, slot};
    cudaUserObject_t obj = nullptr;
    cudaError_t e = ref ? cudaUserObjectCreate(&obj, ref, release_graph_slot, 1, cudaUserObjectNoDestructorSync)
                        : cudaErrorMemoryAllocation;
    if (e == cudaSuccess) {
      ++s->graph_slots->owners;
      e = cudaGraphRetainUserObject(graph, obj, 1, cudaGraphUserObjectMove);
      if (e != cudaSuccess) cudaUserObjectRelease(obj, 1);  // runs release_graph_slot
    } else {
      std::lock_guard<std::mutex> lock(s->graph_slots->mu);
      s->graph_slots->free.push_back(slot);
      delete ref;
    }
    MOE_CUDA_TRY(e, "graph slot for a captured call");
    call->verdict = &s->d_words[CudaState::kFirstGraphSlot + slot];
    return MOE_OK;
  }
  const int i = (int)(s->next_slot++ % kCallSlots);
  MOE_CUDA_TRY(cudaStreamWaitEvent(stream, s->slot_done[i], 0), "wait for the previous call of this slot");
  call->ring = i;
  call->verdict = &s->d_words[CudaState::kFirstCallSlot + i];
  return MOE_OK;
}

int end_call(CudaState* s, cudaStream_t stream, const Call& call, int rc) {
  if (call.ring < 0) return rc;
  // Recorded even after a failed enqueue: the wait above is in the stream and later users need an event.
  cudaError_t e = cudaEventRecord(s->slot_done[call.ring], stream);
  if (rc == MOE_OK && e != cudaSuccess) return cuda_fail(e, "record the call's completion event");
  return rc;
}

// Waits until every direct device-pointer call enqueued so far has finished.
int wait_direct_calls(CudaState* s, const char* what) {
  for (int i = 0; i < kCallSlots; ++i)
    if (s->slot_done[i]) MOE_CUDA_TRY(cudaEventSynchronize(s->slot_done[i]), what);
  return MOE_OK;
}

// Verdict of a validated call: resets it and records the first rejected row of this call (invalid
// indices, then under ERROR the first non-finite read) in it and in err_slot (nullable). idx/mask:
// replay indices (route, nullable) or the backward's indices. counter (nullable): the call's non-finite
// count, zeroed here when the call is valid; *counter_zeroed says whether it was.
int enqueue_verdict(CudaState* s, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                    const uint8_t* mask, bool backward, unsigned long long* verdict, unsigned long long* err_slot,
                    unsigned long long* counter, bool* counter_zeroed, cudaStream_t stream) {
  const Params& p = s->dparams;
  // The validation zeroes the counter only when no non-finite scan follows (the scan may still reject).
  unsigned long long* zero = idx && p.nonfinite != MOE_NONFINITE_ERROR ? counter : nullptr;
  if (counter_zeroed) *counter_zeroed = zero != nullptr;
  if (idx)
    MOE_CUDA_TRY(launch_validate_rows(idx, mask, tokens, p.k, p.experts,
                                      !backward && p.minus_one_rows != MOE_MINUS_ONE_REJECT, verdict, err_slot, zero,
                                      s->validation_acc(verdict), s->validation_done(verdict), s->sm_count, stream),
                 backward ? "index validation launch" : "replay validation launch");
  else
    MOE_CUDA_TRY(cudaMemsetAsync(verdict, 0xff, sizeof(unsigned long long), stream), "verdict reset");
  if (p.nonfinite == MOE_NONFINITE_ERROR)
    MOE_CUDA_TRY(launch_nonfinite_scan(p, logits, dtype, tokens, idx, mask, backward, verdict, err_slot, s->sm_count,
                                       stream),
                 "non-finite scan launch");
  return MOE_OK;
}

// Enqueues one routing call on `stream` (all pointers device). `verdict`: the call's verdict slot
// (device-pointer API, validated on the device), or null (host variants validated first).
int enqueue_route(CudaState* s, const void* logits, int dtype, int64_t tokens, const int32_t* replay,
                  const uint8_t* mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                  unsigned long long* nonfinite, unsigned long long* verdict, cudaStream_t stream) {
  const Params& p = s->dparams;
  bool counter_zeroed = false;
  if (verdict) {
    int rc = enqueue_verdict(s, logits, dtype, tokens, replay, mask, false, verdict,
                             &s->d_words[CudaState::kErrorWord], nonfinite, &counter_zeroed, stream);
    if (rc != MOE_OK) return rc;
  }
  const unsigned long long* call_bad = verdict;
  if (nonfinite && !counter_zeroed) {
    if (call_bad)
      MOE_CUDA_TRY(launch_zero_if_valid(nonfinite, call_bad, stream), "non-finite counter reset");
    else
      MOE_CUDA_TRY(cudaMemsetAsync(nonfinite, 0, sizeof(unsigned long long), stream), "non-finite counter reset");
  }
  if (tokens == 0) return MOE_OK;
  if (replay && !p.needs_full_row()) {
    // Replayed rows read only their k logits; masked-out rows (mask 0) and all -1 rows under LIVE are
    // routed live, by a second launch over the rows the first skipped.
    MOE_CUDA_TRY(launch_route_replay(p, logits, dtype, tokens, replay, mask, out_idx, out_w, out_flags, nonfinite,
                                     call_bad, s->sm_count, stream),
                 "replay kernel launch");
    if (mask || p.minus_one_rows == MOE_MINUS_ONE_LIVE)
      MOE_CUDA_TRY(launch_route_live(p, logits, dtype, tokens, replay, mask, true, out_idx, out_w, out_flags,
                                     nonfinite, call_bad, s->sm_count, stream),
                   "routing kernel launch");
    return MOE_OK;
  }
  MOE_CUDA_TRY(launch_route_live(p, logits, dtype, tokens, replay, mask, false, out_idx, out_w, out_flags, nonfinite,
                                 call_bad, s->sm_count, stream),
               "routing kernel launch");
  return MOE_OK;
}

int enqueue_backward(CudaState* s, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                     const float* grad_w, const uint8_t* flags, float* grad_logits, unsigned long long* verdict,
                     cudaStream_t stream) {
  const Params& p = s->dparams;
  if (verdict) {
    int rc = enqueue_verdict(s, logits, dtype, tokens, idx, nullptr, true, verdict,
                             &s->d_words[CudaState::kErrorWord], nullptr, nullptr, stream);
    if (rc != MOE_OK) return rc;
  }
  MOE_CUDA_TRY(launch_backward(p, logits, dtype, tokens, idx, grad_w,
                               p.nonfinite == MOE_NONFINITE_ZERO ? flags : nullptr, grad_logits, verdict,
                               s->sm_count, stream),
               "backward kernel launch");
  return MOE_OK;
}

// Host variants under non-finite policy ERROR: the scan of the staged inputs, read back before
// anything else is enqueued; a rejection gets the CPU backend's message (the row, the expert and
// the value, read from the caller's logits). Caller holds staging_mu.
int host_nonfinite_check(moe_router* r, const void* host_logits, const void* d_logits, int dtype, int64_t tokens,
                         const int32_t* d_idx, const uint8_t* d_mask, bool backward) {
  CudaState* s = r->cuda;
  const Params& p = s->dparams;
  if (p.nonfinite != MOE_NONFINITE_ERROR) return MOE_OK;
  unsigned long long* word = &s->d_words[CudaState::kHostWord];
  cudaStream_t st = s->host_stream;
  MOE_CUDA_TRY(cudaMemsetAsync(word, 0xff, sizeof *word, st), "verdict reset");
  MOE_CUDA_TRY(launch_nonfinite_scan(p, d_logits, dtype, tokens, d_idx, d_mask, backward, word, nullptr, s->sm_count,
                                     st),
               "non-finite scan launch");
  unsigned long long packed = kNoBadRow;
  MOE_CUDA_TRY(cudaMemcpyAsync(&packed, word, sizeof packed, cudaMemcpyDeviceToHost, st), "read the verdict");
  MOE_CUDA_TRY(cudaStreamSynchronize(st), "non-finite scan");
  if (packed == kNoBadRow) return MOE_OK;
  const int64_t row = (int64_t)((packed & ~kNonfiniteTag) >> 16);
  const int expert = (int)((packed >> 2) & 0x3fffu);
  return nonfinite_error(row, expert, load_logit(static_cast<const char*>(host_logits) +
                                                     (size_t)row * p.experts * dtype_bytes(dtype),
                                                 dtype, expert));
}

int no_state() { return fail(MOE_ERR_INVALID_ARGUMENT, "router has no CUDA state (not a CUDA router?)"); }

}  // namespace

int cuda_compiled() { return 1; }

int cuda_device_count() {
  ErrorStateScope errors;  // no driver / no device must not leave an error behind
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

int cuda_router_init(moe_router* r, int device) {
  ErrorStateScope errors;
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0)
    return fail(MOE_ERR_NO_DEVICE, "no usable CUDA device: %s",
                e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount returned 0");
  if (device < 0 || device >= n)
    return fail(MOE_ERR_NO_DEVICE, "CUDA device %d does not exist (%d visible)", device, n);
  CudaState* s = new (std::nothrow) CudaState();
  if (!s) return fail(MOE_ERR_OUT_OF_MEMORY, "CUDA router state allocation failed");
  r->cuda = s;  // released by cuda_router_release on failure (moe_router_destroy)
  s->device = device;
  s->graph_slots = new (std::nothrow) GraphSlotPool();
  if (!s->graph_slots) return fail(MOE_ERR_OUT_OF_MEMORY, "CUDA router state allocation failed");
  for (int i = kGraphSlots - 1; i >= 0; --i) s->graph_slots->free.push_back(i);
  DeviceScope scope(device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
  MOE_CUDA_TRY(cudaDeviceGetAttribute(&s->sm_count, cudaDevAttrMultiProcessorCount, device), "device attributes");
  MOE_CUDA_TRY(cudaStreamCreateWithFlags(&s->host_stream, cudaStreamNonBlocking), "cudaStreamCreate");
  for (int i = 0; i < kCallSlots; ++i)
    MOE_CUDA_TRY(cudaEventCreateWithFlags(&s->slot_done[i], cudaEventDisableTiming), "cudaEventCreate");
  MOE_CUDA_TRY(cudaMalloc(&s->d_words, 3 * CudaState::kWords * sizeof(unsigned long long)), "cudaMalloc(replay slots)");
  MOE_CUDA_TRY(cudaMemsetAsync(s->d_words, 0xff, 2 * CudaState::kWords * sizeof(unsigned long long), s->host_stream),
               "cudaMemset(replay slots)");
  MOE_CUDA_TRY(cudaMemsetAsync(s->d_words + 2 * CudaState::kWords, 0, CudaState::kWords * sizeof(unsigned long long),
                               s->host_stream),
               "cudaMemset(replay slots)");
  s->dparams = r->params;
  s->dparams.bias = nullptr;
  s->dparams.biased = r->bias != nullptr;  // no call can run yet: the creation-time bias, read directly
  if (!r->params.post_softmax()) {  // sigmoid, sqrtsoftplus, softmax pre: a bias may be set later
    MOE_CUDA_TRY(cudaMalloc(&s->d_bias, sizeof(float) * r->params.experts), "cudaMalloc(bias)");
    if (r->bias)
      MOE_CUDA_TRY(cudaMemcpyAsync(s->d_bias, r->bias->data(), sizeof(float) * r->params.experts,
                                   cudaMemcpyHostToDevice, s->host_stream),
                   "cudaMemcpy(bias)");
    else  // adding +0 changes no routing score (scores are >= +0 or NaN), so zeros equal "no bias"; the
          // ranking key (logit or R) follows Params.biased, not this buffer
      MOE_CUDA_TRY(cudaMemsetAsync(s->d_bias, 0, sizeof(float) * r->params.experts, s->host_stream),
                   "cudaMemset(bias)");
    s->dparams.bias = s->d_bias;
  }
  MOE_CUDA_TRY(cudaStreamSynchronize(s->host_stream), "router init");
  return MOE_OK;
}

void cuda_router_release(moe_router* r) {
  CudaState* s = r->cuda;
  if (!s) return;
  {
    ErrorStateScope errors;
    std::lock_guard<std::mutex> enqueue_lock(s->enqueue_mu);
    std::lock_guard<std::mutex> staging_lock(s->staging_mu);
    DeviceScope scope(s->device);
    (void)wait_direct_calls(s, "router destroy");
    if (s->host_stream) cudaStreamSynchronize(s->host_stream);
    free_buf(s->st_logits);
    free_buf(s->st_idx_in);
    free_buf(s->st_mask);
    free_buf(s->st_idx_out);
    free_buf(s->st_w);
    free_buf(s->st_grad);
    free_buf(s->st_nf);
    free_buf(s->st_flags);
    if (s->d_bias) cudaFree(s->d_bias);
    if (s->d_words) cudaFree(s->d_words);
    for (cudaEvent_t e : s->slot_done)
      if (e) cudaEventDestroy(e);
    if (s->host_stream) cudaStreamDestroy(s->host_stream);
  }
  if (s->graph_slots) s->graph_slots->release();  // graphs still alive keep it until they go
  delete s;
  r->cuda = nullptr;
}

// The device bias is one buffer, updated in place: graphs read it at each launch, so it cannot move.
// Both locks make the change one step for every call the router orders: no direct call is enqueued
// and no host variant stages (host variants read dparams and enqueue on host_stream under staging_mu)
// until the copy has landed and dparams.biased is set, and the direct calls enqueued before it finish
// first (they read d_bias on the device). Graph launches are the caller's to order against this.
int cuda_set_bias(moe_router* r, const float* bias) {
  CudaState* s = r->cuda;
  if (!s) return no_state();
  ErrorStateScope errors;
  std::lock_guard<std::mutex> enqueue_lock(s->enqueue_mu);
  std::lock_guard<std::mutex> staging_lock(s->staging_mu);
  DeviceScope scope(s->device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
  int rc = wait_direct_calls(s, "set_bias: wait for the calls in flight");
  if (rc != MOE_OK) return rc;
  MOE_CUDA_TRY(cudaMemcpyAsync(s->d_bias, bias, sizeof(float) * r->params.experts, cudaMemcpyHostToDevice,
                               s->host_stream),
               "cudaMemcpy(bias)");
  MOE_CUDA_TRY(cudaStreamSynchronize(s->host_stream), "set_bias");
  s->dparams.biased = true;  // from now on experts rank by R = S + b (calls captured earlier keep their key)
  return MOE_OK;
}

// Every device-pointer call: the device and the caller's error state kept, one enqueue at a time, a ring
// slot (and a verdict slot for validated calls) around what `enqueue` puts on the stream.
template <typename Enqueue>
static int enqueue_call(moe_router* r, void* stream, bool validated, const Enqueue& enqueue) {
  CudaState* s = r->cuda;
  if (!s) return no_state();
  ErrorStateScope errors;
  DeviceScope scope(s->device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  std::lock_guard<std::mutex> lock(s->enqueue_mu);
  Call call;
  int rc = begin_call(s, st, validated, &call);
  if (rc != MOE_OK) return rc;
  return end_call(s, st, call, enqueue(s, st, validated ? call.verdict : nullptr));
}

int cuda_route(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
               const uint8_t* replay_mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
               int64_t* out_nonfinite, void* stream) {
  if (!r->cuda) return no_state();
  const bool validated = replay_idx != nullptr || r->cuda->dparams.nonfinite == MOE_NONFINITE_ERROR;
  return enqueue_call(r, stream, validated, [&](CudaState* s, cudaStream_t st, unsigned long long* verdict) {
    return enqueue_route(s, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w, out_flags,
                         reinterpret_cast<unsigned long long*>(out_nonfinite), verdict, st);
  });
}

int cuda_backward(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                  const float* grad_w, const uint8_t* flags, float* grad_logits, void* stream) {
  if (!r->cuda) return no_state();
  if (tokens == 0) return MOE_OK;
  return enqueue_call(r, stream, true, [&](CudaState* s, cudaStream_t st, unsigned long long* verdict) {
    return enqueue_backward(s, logits, dtype, tokens, idx, grad_w, flags, grad_logits, verdict, st);
  });
}

int cuda_route_host(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
                    const uint8_t* replay_mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                    int64_t* out_nonfinite) {
  CudaState* s = r->cuda;
  if (!s) return no_state();
  const int k = r->params.k, E = r->params.experts;
  if (replay_idx) {  // synchronous validation with the CPU backend's exact message
    int reason = 0;
    int64_t bad = first_bad_row(replay_idx, replay_mask, tokens, k, E, &reason,
                                r->params.minus_one_rows != MOE_MINUS_ONE_REJECT);
    if (bad >= 0) return replay_error(bad, reason, replay_idx, k, E);
  }
  if (tokens == 0) {
    if (out_nonfinite) *out_nonfinite = 0;
    return MOE_OK;
  }
  StagingScope scope(s);
  MOE_CUDA_TRY(scope.device.status(), "cudaSetDevice");
  const size_t lbytes = (size_t)tokens * E * dtype_bytes(dtype);
  const size_t ibytes = (size_t)tokens * k * sizeof(int32_t);
  const size_t wbytes = (size_t)tokens * k * sizeof(float);
  MOE_CUDA_TRY(ensure(s->st_logits, lbytes), "staging allocation (logits)");
  MOE_CUDA_TRY(ensure(s->st_idx_out, ibytes), "staging allocation (indices)");
  MOE_CUDA_TRY(ensure(s->st_w, wbytes), "staging allocation (weights)");
  MOE_CUDA_TRY(ensure(s->st_nf, sizeof(unsigned long long)), "staging allocation");
  cudaStream_t st = s->host_stream;
  int32_t* d_replay = nullptr;
  uint8_t* d_mask = nullptr;
  MOE_CUDA_TRY(cudaMemcpyAsync(s->st_logits.p, logits, lbytes, cudaMemcpyHostToDevice, st), "copy logits");
  if (replay_idx) {
    MOE_CUDA_TRY(ensure(s->st_idx_in, ibytes), "staging allocation (replay)");
    d_replay = static_cast<int32_t*>(s->st_idx_in.p);
    MOE_CUDA_TRY(cudaMemcpyAsync(d_replay, replay_idx, ibytes, cudaMemcpyHostToDevice, st), "copy replay indices");
    if (replay_mask) {
      MOE_CUDA_TRY(ensure(s->st_mask, (size_t)tokens), "staging allocation (mask)");
      d_mask = static_cast<uint8_t*>(s->st_mask.p);
      MOE_CUDA_TRY(cudaMemcpyAsync(d_mask, replay_mask, (size_t)tokens, cudaMemcpyHostToDevice, st),
                   "copy replay mask");
    }
  }
  int rc = host_nonfinite_check(r, logits, s->st_logits.p, dtype, tokens, d_replay, d_mask, false);
  if (rc != MOE_OK) return rc;
  unsigned long long* d_nf = static_cast<unsigned long long*>(s->st_nf.p);
  uint8_t* d_flags = nullptr;
  if (out_flags) {
    MOE_CUDA_TRY(ensure(s->st_flags, (size_t)tokens), "staging allocation (row flags)");
    d_flags = static_cast<uint8_t*>(s->st_flags.p);
  }
  rc = enqueue_route(s, s->st_logits.p, dtype, tokens, d_replay, d_mask, static_cast<int32_t*>(s->st_idx_out.p),
                     static_cast<float*>(s->st_w.p), d_flags, d_nf, nullptr, st);
  if (rc != MOE_OK) {
    cudaStreamSynchronize(st);
    return rc;
  }
  unsigned long long nf = 0;
  MOE_CUDA_TRY(cudaMemcpyAsync(out_idx, s->st_idx_out.p, ibytes, cudaMemcpyDeviceToHost, st), "copy indices back");
  MOE_CUDA_TRY(cudaMemcpyAsync(out_w, s->st_w.p, wbytes, cudaMemcpyDeviceToHost, st), "copy weights back");
  if (out_flags)
    MOE_CUDA_TRY(cudaMemcpyAsync(out_flags, d_flags, (size_t)tokens, cudaMemcpyDeviceToHost, st),
                 "copy row flags back");
  MOE_CUDA_TRY(cudaMemcpyAsync(&nf, d_nf, sizeof nf, cudaMemcpyDeviceToHost, st), "copy count back");
  MOE_CUDA_TRY(cudaStreamSynchronize(st), "routing (host staging)");
  if (out_nonfinite) *out_nonfinite = (int64_t)nf;
  return MOE_OK;
}

int cuda_backward_host(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                       const float* grad_w, const uint8_t* flags, float* grad_logits) {
  CudaState* s = r->cuda;
  if (!s) return no_state();
  const int k = r->params.k, E = r->params.experts;
  int reason = 0;
  int64_t bad = first_bad_row(idx, nullptr, tokens, k, E, &reason);
  if (bad >= 0) return replay_error(bad, reason, idx, k, E);
  if (tokens == 0) return MOE_OK;
  StagingScope scope(s);
  MOE_CUDA_TRY(scope.device.status(), "cudaSetDevice");
  const size_t lbytes = (size_t)tokens * E * dtype_bytes(dtype);
  const size_t ibytes = (size_t)tokens * k * sizeof(int32_t);
  const size_t wbytes = (size_t)tokens * k * sizeof(float);
  const size_t gbytes = (size_t)tokens * E * sizeof(float);
  MOE_CUDA_TRY(ensure(s->st_logits, lbytes), "staging allocation (logits)");
  MOE_CUDA_TRY(ensure(s->st_idx_in, ibytes), "staging allocation (indices)");
  MOE_CUDA_TRY(ensure(s->st_w, wbytes), "staging allocation (weight gradients)");
  MOE_CUDA_TRY(ensure(s->st_grad, gbytes), "staging allocation (logit gradients)");
  cudaStream_t st = s->host_stream;
  MOE_CUDA_TRY(cudaMemcpyAsync(s->st_logits.p, logits, lbytes, cudaMemcpyHostToDevice, st), "copy logits");
  MOE_CUDA_TRY(cudaMemcpyAsync(s->st_idx_in.p, idx, ibytes, cudaMemcpyHostToDevice, st), "copy indices");
  MOE_CUDA_TRY(cudaMemcpyAsync(s->st_w.p, grad_w, wbytes, cudaMemcpyHostToDevice, st), "copy weight gradients");
  const uint8_t* d_flags = nullptr;
  if (r->params.nonfinite == MOE_NONFINITE_ZERO) {  // moe_route_backward_host required them
    MOE_CUDA_TRY(ensure(s->st_flags, (size_t)tokens), "staging allocation (row flags)");
    MOE_CUDA_TRY(cudaMemcpyAsync(s->st_flags.p, flags, (size_t)tokens, cudaMemcpyHostToDevice, st), "copy row flags");
    d_flags = static_cast<const uint8_t*>(s->st_flags.p);
  }
  int rc = host_nonfinite_check(r, logits, s->st_logits.p, dtype, tokens,
                                static_cast<const int32_t*>(s->st_idx_in.p), nullptr, true);
  if (rc != MOE_OK) return rc;
  rc = enqueue_backward(s, s->st_logits.p, dtype, tokens, static_cast<const int32_t*>(s->st_idx_in.p),
                        static_cast<const float*>(s->st_w.p), d_flags, static_cast<float*>(s->st_grad.p), nullptr, st);
  if (rc != MOE_OK) {
    cudaStreamSynchronize(st);
    return rc;
  }
  MOE_CUDA_TRY(cudaMemcpyAsync(grad_logits, s->st_grad.p, gbytes, cudaMemcpyDeviceToHost, st), "copy gradients back");
  MOE_CUDA_TRY(cudaStreamSynchronize(st), "backward (host staging)");
  return MOE_OK;
}

int cuda_check_replay(moe_router* r, int64_t* bad_row, int* reason) {
  CudaState* s = r->cuda;
  if (!s) return no_state();
  StagingScope scope(s);
  MOE_CUDA_TRY(scope.device.status(), "cudaSetDevice");
  int rc = wait_direct_calls(s, "check_replay: wait for the calls in flight");
  if (rc != MOE_OK) return rc;
  unsigned long long packed = kNoBadRow;
  cudaStream_t st = s->host_stream;
  MOE_CUDA_TRY(launch_take_error(&s->d_words[CudaState::kErrorWord], &s->d_words[CudaState::kTakenWord], st),
               "check_replay: take the error slot");
  MOE_CUDA_TRY(cudaMemcpyAsync(&packed, &s->d_words[CudaState::kTakenWord], sizeof packed, cudaMemcpyDeviceToHost, st),
               "check_replay: read the error slot");
  MOE_CUDA_TRY(cudaStreamSynchronize(st), "check_replay");
  if (packed == kNoBadRow) return MOE_OK;
  if (packed >= kNonfiniteTag) {
    const int64_t row = (int64_t)((packed & ~kNonfiniteTag) >> 16);
    const unsigned kind = (unsigned)(packed & 3u);
    if (bad_row) *bad_row = row;
    if (reason) *reason = MOE_REPLAY_NONFINITE;
    return fail(MOE_ERR_NONFINITE, "row %lld: the logit of expert %d is %s (non-finite policy ERROR, rejected on the device)",
                (long long)row, (int)((packed >> 2) & 0x3fffu),
                kind == kValueNaN ? "NaN" : kind == kValuePosInf ? "+inf" : "-inf");
  }
  const int64_t row = (int64_t)(packed >> 2);
  const int why = (int)(packed & 3u);
  if (bad_row) *bad_row = row;
  if (reason) *reason = why;
  const int E = r->params.experts;
  if (why == MOE_REPLAY_OUT_OF_RANGE)
    return fail(MOE_ERR_INVALID_REPLAY, "row %lld: an expert index is out of range [0, %d) (rejected on the device)",
                (long long)row, E);
  return fail(MOE_ERR_INVALID_REPLAY, "row %lld: an expert appears twice (rejected on the device)", (long long)row);
}

// ------------------------------------------------------------------- spec section 6 (device pointers)
// Arguments were checked by moe_api_training.cpp. Calls that read indices are validated on the device
// (a verdict slot, as moe_route_backward); the others still take a ring slot, so that destroy and
// set_bias wait for them like for every other call.
namespace {

int validate_idx(CudaState* s, const int32_t* idx, int64_t tokens, unsigned long long* verdict, cudaStream_t st) {
  MOE_CUDA_TRY(launch_validate_rows(idx, nullptr, tokens, s->dparams.k, s->dparams.experts, false, verdict,
                                    &s->d_words[CudaState::kErrorWord], nullptr, s->validation_acc(verdict),
                                    s->validation_done(verdict), s->sm_count, st),
               "index validation launch");
  return MOE_OK;
}

}  // namespace

int cuda_valid_tokens(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* padding,
                      uint8_t* out_valid, int64_t* out_count, void* stream) {
  return enqueue_call(r, stream, false, [&](CudaState* s, cudaStream_t st, unsigned long long*) {
    MOE_CUDA_TRY(launch_valid_tokens(s->dparams, logits, dtype, tokens, padding, out_valid,
                                     reinterpret_cast<unsigned long long*>(out_count), s->sm_count, st),
                 "valid tokens launch");
    return (int)MOE_OK;
  });
}

int cuda_tokens_per_expert(moe_router* r, const int32_t* idx, const uint8_t* map, const uint8_t* valid,
                           int64_t tokens, int32_t* counts, void* stream) {
  return enqueue_call(r, stream, idx != nullptr, [&](CudaState* s, cudaStream_t st, unsigned long long* verdict) {
    if (idx) {
      int rc = validate_idx(s, idx, tokens, verdict, st);
      if (rc != MOE_OK) return rc;
    }
    MOE_CUDA_TRY(launch_tokens_per_expert(idx, map, valid, tokens, s->dparams.k, s->dparams.experts, counts, verdict,
                                          s->sm_count, st),
                 "tokens per expert launch");
    return (int)MOE_OK;
  });
}

int cuda_losses(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* valid,
                const moe_loss_config& c, moe_loss_values* out, int32_t* out_counts, float* out_scores,
                uint8_t* out_map, float* grad, void* workspace, void* stream) {
  const Params& p = r->params;
  const LossShape shape = loss_shape(c, tokens, p.experts, out_counts || out_scores || out_map);
  LossArgs a{};
  a.score_fn = p.score_fn;
  a.experts = p.experts;
  a.k = p.k;
  a.dtype = dtype;
  a.layout = shape.seq ? c.seq_layout : MOE_SEQ_BS;  // without the sequence loss: one sequence, t = position
  a.zero = p.nonfinite == MOE_NONFINITE_ZERO;
  a.aux_coeff = c.aux_coeff;
  a.seq_coeff = c.seq_aux_coeff;
  a.glob_coeff = c.global_aux_coeff;
  a.z_coeff = c.z_coeff;
  a.global_tokens = c.global_aux_coeff != 0.0f ? c.global_tokens : nullptr;
  a.global_num_tokens = c.global_num_tokens;
  return enqueue_call(r, stream, false, [&](CudaState* s, cudaStream_t st, unsigned long long*) {
    MOE_CUDA_TRY(launch_losses(a, shape, logits, valid, out, out_counts, out_scores, out_map, grad,
                               static_cast<char*>(workspace), s->sm_count, st),
                 "losses launch");
    return (int)MOE_OK;
  });
}

int cuda_drop_tokens(moe_router* r, const int32_t* idx, const float* w, int64_t tokens, int64_t cap, int policy,
                     int pad, uint8_t* out_map, float* out_probs, uint8_t* out_kept, int32_t* out_kept_counts,
                     int64_t* out_dropped, void* workspace, void* stream) {
  return enqueue_call(r, stream, true, [&](CudaState* s, cudaStream_t st, unsigned long long* verdict) {
    int rc = validate_idx(s, idx, tokens, verdict, st);
    if (rc != MOE_OK) return rc;
    MOE_CUDA_TRY(launch_drop_tokens(idx, w, tokens, s->dparams.k, s->dparams.experts, cap, policy, pad != 0, out_map,
                                    out_probs, out_kept, out_kept_counts,
                                    reinterpret_cast<unsigned long long*>(out_dropped),
                                    static_cast<char*>(workspace), verdict, s->sm_count, st),
                 "token dropping launch");
    return (int)MOE_OK;
  });
}

int64_t cuda_losses_workspace(const moe_loss_config& c, int64_t tokens, int experts, bool aux_outputs) {
  return (int64_t)loss_layout(loss_shape(c, tokens, experts, aux_outputs)).total;
}

int64_t cuda_drop_workspace(int64_t tokens, int k, int experts, int policy) {
  return (int64_t)drop_layout(tokens, k, experts, policy).total;
}

int cuda_malloc(int device, int64_t bytes, void** out) {
  ErrorStateScope errors;
  DeviceScope scope(device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
  MOE_CUDA_TRY(cudaMalloc(out, (size_t)bytes), "cudaMalloc");
  return MOE_OK;
}

int cuda_free(void* ptr) {
  ErrorStateScope errors;
  MOE_CUDA_TRY(cudaFree(ptr), "cudaFree");
  return MOE_OK;
}

int cuda_memcpy(void* dst, const void* src, int64_t bytes) {
  ErrorStateScope errors;
  MOE_CUDA_TRY(cudaMemcpy(dst, src, (size_t)bytes, cudaMemcpyDefault), "cudaMemcpy");
  // A pageable source may still be in flight to the device when cudaMemcpy returns.
  MOE_CUDA_TRY(cudaDeviceSynchronize(), "cudaMemcpy: wait for the copy");
  return MOE_OK;
}

int cuda_stream_create(int device, void** out) {
  ErrorStateScope errors;
  DeviceScope scope(device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
  cudaStream_t s = nullptr;
  MOE_CUDA_TRY(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  *out = s;
  return MOE_OK;
}

int cuda_stream_destroy(void* stream) {
  ErrorStateScope errors;
  MOE_CUDA_TRY(cudaStreamDestroy(static_cast<cudaStream_t>(stream)), "cudaStreamDestroy");
  return MOE_OK;
}

int cuda_stream_synchronize(void* stream) {
  ErrorStateScope errors;
  MOE_CUDA_TRY(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize");
  return MOE_OK;
}

int cuda_routing_agreement(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t row_stride, int experts,
                           int64_t* d_out2, uint8_t* d_row_differs, void* stream) {
  (void)experts;
  ErrorStateScope errors;
  MOE_CUDA_TRY(launch_agreement(a, b, rows, k, row_stride, reinterpret_cast<unsigned long long*>(d_out2),
                                d_row_differs, static_cast<cudaStream_t>(stream)),
               "routing agreement kernel launch");
  return MOE_OK;
}

}  // namespace moe
