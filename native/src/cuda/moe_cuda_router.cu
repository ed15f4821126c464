// SPDX-License-Identifier: Apache-2.0
// CUDA backend entry points (moe_internal.h): router state, device-pointer calls (asynchronous,
// graph-capturable: memsets and kernels only), host-staging variants, replay error reporting.
#include <new>

#include "moe_cuda_common.cuh"

namespace moe {
namespace {

int cuda_fail(cudaError_t e, const char* what) {
  return fail(MOE_ERR_CUDA, "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

#define MOE_CUDA_TRY(expr, what)             \
  do {                                       \
    cudaError_t err_ = (expr);               \
    if (err_ != cudaSuccess) return cuda_fail(err_, what); \
  } while (0)

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
    cudaGetLastError();
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

// Enqueues one routing call on `stream` (all pointers device). `validate`: check replay rows on the
// device (the device-pointer API); the host variants validate on the host before staging.
int enqueue_route(CudaState* s, const void* logits, int dtype, int64_t tokens, const int32_t* replay,
                  const uint8_t* mask, int32_t* out_idx, float* out_w, unsigned long long* nonfinite, bool validate,
                  cudaStream_t stream) {
  const Params& p = s->dparams;
  const unsigned long long* call_bad = nullptr;
  if (replay && validate) {
    MOE_CUDA_TRY(launch_validate_rows(replay, mask, tokens, p.k, p.experts, &s->d_flags[0], &s->d_flags[1],
                                      s->sm_count, stream),
                 "replay validation launch");
    call_bad = &s->d_flags[0];
  }
  if (nonfinite) {
    if (call_bad)
      MOE_CUDA_TRY(launch_zero_if_valid(nonfinite, call_bad, stream), "non-finite counter reset");
    else
      MOE_CUDA_TRY(cudaMemsetAsync(nonfinite, 0, sizeof(unsigned long long), stream), "non-finite counter reset");
  }
  if (tokens == 0) return MOE_OK;
  if (replay && !p.needs_full_row()) {
    // Replayed rows read only their k logits; masked-out rows (mask 0) are routed live.
    MOE_CUDA_TRY(launch_route_replay(p, logits, dtype, tokens, replay, mask, out_idx, out_w, nonfinite, call_bad,
                                     s->sm_count, stream),
                 "replay kernel launch");
    if (mask)
      MOE_CUDA_TRY(launch_route_live(p, logits, dtype, tokens, replay, mask, true, out_idx, out_w, nonfinite,
                                     call_bad, s->sm_count, stream),
                   "routing kernel launch");
    return MOE_OK;
  }
  MOE_CUDA_TRY(launch_route_live(p, logits, dtype, tokens, replay, mask, false, out_idx, out_w, nonfinite, call_bad,
                                 s->sm_count, stream),
               "routing kernel launch");
  return MOE_OK;
}

int enqueue_backward(CudaState* s, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                     const float* grad_w, float* grad_logits, bool validate, cudaStream_t stream) {
  const Params& p = s->dparams;
  const unsigned long long* call_bad = nullptr;
  if (validate) {
    MOE_CUDA_TRY(launch_validate_rows(idx, nullptr, tokens, p.k, p.experts, &s->d_flags[0], &s->d_flags[1],
                                      s->sm_count, stream),
                 "index validation launch");
    call_bad = &s->d_flags[0];
  }
  MOE_CUDA_TRY(launch_backward(p, logits, dtype, tokens, idx, grad_w, grad_logits, call_bad, s->sm_count, stream),
               "backward kernel launch");
  return MOE_OK;
}

int no_state() { return fail(MOE_ERR_INVALID_ARGUMENT, "router has no CUDA state (not a CUDA router?)"); }

}  // namespace

int cuda_compiled() { return 1; }

int cuda_device_count() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // no driver / no device: not sticky, clear it
    return 0;
  }
  return n;
}

int cuda_router_init(moe_router* r, int device) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess || n == 0) {
    cudaGetLastError();
    return fail(MOE_ERR_NO_DEVICE, "no usable CUDA device: %s",
                e != cudaSuccess ? cudaGetErrorString(e) : "cudaGetDeviceCount returned 0");
  }
  if (device < 0 || device >= n)
    return fail(MOE_ERR_NO_DEVICE, "CUDA device %d does not exist (%d visible)", device, n);
  CudaState* s = new (std::nothrow) CudaState();
  if (!s) return fail(MOE_ERR_OUT_OF_MEMORY, "CUDA router state allocation failed");
  r->cuda = s;  // released by cuda_router_release on failure (moe_router_destroy)
  s->device = device;
  DeviceScope scope(device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
  MOE_CUDA_TRY(cudaDeviceGetAttribute(&s->sm_count, cudaDevAttrMultiProcessorCount, device), "device attributes");
  MOE_CUDA_TRY(cudaStreamCreateWithFlags(&s->host_stream, cudaStreamNonBlocking), "cudaStreamCreate");
  MOE_CUDA_TRY(cudaMalloc(&s->d_flags, 2 * sizeof(unsigned long long)), "cudaMalloc(replay flags)");
  MOE_CUDA_TRY(cudaMemsetAsync(s->d_flags, 0xff, 2 * sizeof(unsigned long long), s->host_stream),
               "cudaMemset(replay flags)");
  s->dparams = r->params;
  s->dparams.bias = nullptr;
  if (r->params.bias) {
    MOE_CUDA_TRY(cudaMalloc(&s->d_bias, sizeof(float) * r->params.experts), "cudaMalloc(bias)");
    MOE_CUDA_TRY(cudaMemcpyAsync(s->d_bias, r->params.bias, sizeof(float) * r->params.experts,
                                 cudaMemcpyHostToDevice, s->host_stream),
                 "cudaMemcpy(bias)");
    s->dparams.bias = s->d_bias;
  }
  MOE_CUDA_TRY(cudaStreamSynchronize(s->host_stream), "router init");
  return MOE_OK;
}

void cuda_router_release(moe_router* r) {
  CudaState* s = r->cuda;
  if (!s) return;
  {
    DeviceScope scope(s->device);
    if (s->host_stream) cudaStreamSynchronize(s->host_stream);
    if (s->has_last_stream) cudaStreamSynchronize(s->last_stream);
    cudaGetLastError();
    free_buf(s->st_logits);
    free_buf(s->st_idx_in);
    free_buf(s->st_mask);
    free_buf(s->st_idx_out);
    free_buf(s->st_w);
    free_buf(s->st_grad);
    free_buf(s->st_nf);
    if (s->d_bias) cudaFree(s->d_bias);
    if (s->d_flags) cudaFree(s->d_flags);
    if (s->host_stream) cudaStreamDestroy(s->host_stream);
    cudaGetLastError();
  }
  delete s;
  r->cuda = nullptr;
}

int cuda_set_bias(moe_router* r) {
  CudaState* s = r->cuda;
  if (!s) return no_state();
  std::lock_guard<std::mutex> lock(s->mu);
  DeviceScope scope(s->device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
  if (!s->d_bias) {
    MOE_CUDA_TRY(cudaMalloc(&s->d_bias, sizeof(float) * r->params.experts), "cudaMalloc(bias)");
  }
  // Calls already enqueued keep reading the old bias until they ran: the caller orders set_bias
  // after its last routing call (as for any parameter update).
  if (s->has_last_stream) MOE_CUDA_TRY(cudaStreamSynchronize(s->last_stream), "set_bias: stream synchronize");
  MOE_CUDA_TRY(cudaMemcpyAsync(s->d_bias, r->params.bias, sizeof(float) * r->params.experts, cudaMemcpyHostToDevice,
                               s->host_stream),
               "cudaMemcpy(bias)");
  MOE_CUDA_TRY(cudaStreamSynchronize(s->host_stream), "set_bias");
  s->dparams.bias = s->d_bias;
  return MOE_OK;
}

int cuda_route(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
               const uint8_t* replay_mask, int32_t* out_idx, float* out_w, int64_t* out_nonfinite, void* stream) {
  CudaState* s = r->cuda;
  if (!s) return no_state();
  DeviceScope scope(s->device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  s->last_stream = st;
  s->has_last_stream = true;
  return enqueue_route(s, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w,
                       reinterpret_cast<unsigned long long*>(out_nonfinite), true, st);
}

int cuda_backward(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                  const float* grad_w, float* grad_logits, void* stream) {
  CudaState* s = r->cuda;
  if (!s) return no_state();
  if (tokens == 0) return MOE_OK;
  DeviceScope scope(s->device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
  cudaStream_t st = static_cast<cudaStream_t>(stream);
  s->last_stream = st;
  s->has_last_stream = true;
  return enqueue_backward(s, logits, dtype, tokens, idx, grad_w, grad_logits, true, st);
}

int cuda_route_host(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
                    const uint8_t* replay_mask, int32_t* out_idx, float* out_w, int64_t* out_nonfinite) {
  CudaState* s = r->cuda;
  if (!s) return no_state();
  const int k = r->params.k, E = r->params.experts;
  if (replay_idx) {  // synchronous validation with the CPU backend's exact message
    int reason = 0;
    int64_t bad = first_bad_row(replay_idx, replay_mask, tokens, k, E, &reason);
    if (bad >= 0) return replay_error(bad, reason, replay_idx, k, E);
  }
  if (tokens == 0) {
    if (out_nonfinite) *out_nonfinite = 0;
    return MOE_OK;
  }
  std::lock_guard<std::mutex> lock(s->mu);
  DeviceScope scope(s->device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
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
  unsigned long long* d_nf = static_cast<unsigned long long*>(s->st_nf.p);
  int rc = enqueue_route(s, s->st_logits.p, dtype, tokens, d_replay, d_mask, static_cast<int32_t*>(s->st_idx_out.p),
                         static_cast<float*>(s->st_w.p), d_nf, false, st);
  if (rc != MOE_OK) {
    cudaStreamSynchronize(st);
    return rc;
  }
  unsigned long long nf = 0;
  MOE_CUDA_TRY(cudaMemcpyAsync(out_idx, s->st_idx_out.p, ibytes, cudaMemcpyDeviceToHost, st), "copy indices back");
  MOE_CUDA_TRY(cudaMemcpyAsync(out_w, s->st_w.p, wbytes, cudaMemcpyDeviceToHost, st), "copy weights back");
  MOE_CUDA_TRY(cudaMemcpyAsync(&nf, d_nf, sizeof nf, cudaMemcpyDeviceToHost, st), "copy count back");
  MOE_CUDA_TRY(cudaStreamSynchronize(st), "routing (host staging)");
  if (out_nonfinite) *out_nonfinite = (int64_t)nf;
  return MOE_OK;
}

int cuda_backward_host(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                       const float* grad_w, float* grad_logits) {
  CudaState* s = r->cuda;
  if (!s) return no_state();
  const int k = r->params.k, E = r->params.experts;
  int reason = 0;
  int64_t bad = first_bad_row(idx, nullptr, tokens, k, E, &reason);
  if (bad >= 0) return replay_error(bad, reason, idx, k, E);
  if (tokens == 0) return MOE_OK;
  std::lock_guard<std::mutex> lock(s->mu);
  DeviceScope scope(s->device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
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
  int rc = enqueue_backward(s, s->st_logits.p, dtype, tokens, static_cast<const int32_t*>(s->st_idx_in.p),
                            static_cast<const float*>(s->st_w.p), static_cast<float*>(s->st_grad.p), false, st);
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
  std::lock_guard<std::mutex> lock(s->mu);
  DeviceScope scope(s->device);
  MOE_CUDA_TRY(scope.status(), "cudaSetDevice");
  if (s->has_last_stream) MOE_CUDA_TRY(cudaStreamSynchronize(s->last_stream), "check_replay: stream synchronize");
  unsigned long long packed = kNoBadRow;
  cudaStream_t st = s->host_stream;
  MOE_CUDA_TRY(cudaMemcpyAsync(&packed, &s->d_flags[1], sizeof packed, cudaMemcpyDeviceToHost, st),
               "check_replay: read error slot");
  MOE_CUDA_TRY(cudaStreamSynchronize(st), "check_replay");
  if (packed == kNoBadRow) return MOE_OK;
  MOE_CUDA_TRY(cudaMemsetAsync(&s->d_flags[1], 0xff, sizeof(unsigned long long), st), "check_replay: reset slot");
  MOE_CUDA_TRY(cudaStreamSynchronize(st), "check_replay");
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

int cuda_routing_agreement(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t row_stride, int experts,
                           int64_t* d_out2, uint8_t* d_row_differs, void* stream) {
  (void)experts;
  MOE_CUDA_TRY(launch_agreement(a, b, rows, k, row_stride, reinterpret_cast<unsigned long long*>(d_out2),
                                d_row_differs, static_cast<cudaStream_t>(stream)),
               "routing agreement kernel launch");
  return MOE_OK;
}

}  // namespace moe
