// SPDX-License-Identifier: Apache-2.0
// Internal declarations shared by the backend sources (not part of the C ABI).
#ifndef MOE_INTERNAL_H_
#define MOE_INTERNAL_H_

#include <stdint.h>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>
#include "moe_router.h"
#include "moe_routing_math.h"

namespace moe {
class CpuPool;
struct CudaState;
}  // namespace moe

namespace moe {
// One version of the expert bias [experts]: never written after it is published, so a call that took it
// reads the same values in every row while set_bias publishes the next version; the last call holding an
// old version frees it.
using BiasVersion = std::shared_ptr<const std::vector<float>>;
}  // namespace moe

struct moe_router {
  moe_router_config config;  // expert_bias is null: the bias lives in `bias`
  moe::Params params;        // everything but the bias (bias null, biased false): see moe::call_params
  int backend;
  moe::CpuPool* pool = nullptr;
  moe::CudaState* cuda = nullptr;
  // The current bias version (null: none given yet), owned here and replaced only under set_mu, which
  // serialises whole bias changes (the CUDA device copy and the swap) so that concurrent setters publish
  // on the host and the device in the same order. Calls read it without a lock (moe::BiasRead): bias_now
  // is its values, and a call counts itself on bias_readers[bias_epoch & 1] before it reads bias_now, so
  // set_bias frees the version it replaced only once neither counter holds a call that may have read it.
  std::mutex set_mu;
  moe::BiasVersion bias;
  std::atomic<const float*> bias_now{nullptr};
  alignas(64) std::atomic<unsigned> bias_epoch{0};  // written by set_bias only; its own line, read per call
  alignas(64) std::atomic<int64_t> bias_readers[2] = {{0}, {0}};  // written per call: away from the rest
};

namespace moe {
// The bias of one host call, read lock-free: two atomic increments of a counter per call (a mutex and a
// shared_ptr copy were four locked operations; std::atomic_load on a shared_ptr is a hashed mutex in
// libstdc++, slower still: docs/cpu-design.md, "Bias read"). Every row of the call uses data(), which
// set_bias does not free while this object lives.
class BiasRead {
 public:
  explicit BiasRead(moe_router* r) : r_(r), slot_(r->bias_epoch.load() & 1u) {
    r->bias_readers[slot_].fetch_add(1);  // seq_cst: before the load below, in the setter's view too
    data_ = r->bias_now.load();
  }
  ~BiasRead() { r_->bias_readers[slot_].fetch_sub(1, std::memory_order_release); }
  BiasRead(const BiasRead&) = delete;
  BiasRead& operator=(const BiasRead&) = delete;
  const float* data() const { return data_; }

 private:
  moe_router* r_;
  unsigned slot_;
  const float* data_;
};
// The Params of one host call: r->params with the bias `hold` read. No allocation, no lock.
Params call_params(const moe_router* r, const BiasRead& hold);
}  // namespace moe

namespace moe {

// Records the calling thread's error detail and returns `status`.
int fail(int status, const char* fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void clear_error();

Params params_from_config(const moe_router_config& c, const float* bias);
bool valid_dtype(int dtype);
// First bad row of replay/backward indices ([tokens, k], rows with mask 0 skipped, and all -1 rows
// when minus_one_ok), or -1.
int64_t first_bad_row(const int32_t* idx, const uint8_t* mask, int64_t tokens, int k, int experts,
                      int* reason, bool minus_one_ok = false);
// MOE_ERR_NONFINITE naming `row` and the first non-finite logit it read (expert e, value l).
int nonfinite_error(int64_t row, int expert, float l);
int replay_error(int64_t row, int reason, const int32_t* idx, int k, int experts);

// CPU backend (moe_cpu.cpp)
int cpu_router_init(moe_router* r);
void cpu_router_release(moe_router* r);
int cpu_set_threads(moe_router* r, int threads);
int cpu_set_num_threads(int threads);  // the process-wide pool; threads >= 0, 0 = usable CPUs
int cpu_num_threads();
// The CPU kernels' instruction set (moe_cpu.cpp): the CPU's, capped by MOE_ROUTER_CPU_ISA and cpu_set_isa_cap.
enum { kIsaScalar = 0, kIsaAvx2 = 1, kIsaAvx512 = 2 };
int cpu_isa();
int cpu_set_isa_cap(int cap);  // -1: no cap (the environment's); returns the level now in use
// The shared pool's spin bound in microseconds (MOE_ROUTER_CPU_SPIN_US at first use); for cpu_bench's A/B.
int64_t cpu_set_pool_spin_us(int64_t us);  // returns the previous bound
int cpu_route(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
              const uint8_t* replay_mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
              int64_t* out_nonfinite);
int cpu_backward(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                 const float* grad_w, const uint8_t* flags, float* grad_logits);

// Training extras on the CPU (moe_cpu_training.cpp); arguments already validated.
int cpu_aux_loss(moe_router* r, const void* logits, int dtype, int64_t tokens, float coeff, float* out_scores,
                 uint8_t* out_map, int32_t* out_counts, float* out_loss, float* grad);
int cpu_z_loss(moe_router* r, const void* logits, int dtype, int64_t tokens, float coeff, float* out_loss,
               float* grad);
int cpu_dense_views(const int32_t* idx, const float* w, int64_t tokens, int k, int experts, uint8_t* map,
                    uint64_t* bits, float* probs);
// Spec section 6 (moe_cpu_training.cpp, moe_cpu_dropping.cpp; entry points in moe_api_training.cpp).
int cpu_losses(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* valid,
               const moe_loss_config& config, moe_loss_values* out, int32_t* out_counts, float* out_scores,
               uint8_t* out_map, float* grad);
int cpu_valid_tokens(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* padding,
                     uint8_t* out_valid, int64_t* out_count);
// Counts of idx [tokens, k] (idx non-null) or column sums of map [tokens, E], over the valid rows.
int cpu_tokens_per_expert(const int32_t* idx, const uint8_t* map, const uint8_t* valid, int64_t tokens, int k,
                          int experts, int32_t* counts);
// ceil((tokens * k / experts) * capacity_factor) in float64, or tokens when that is >= tokens.
int64_t drop_capacity(int64_t tokens, int k, int experts, double capacity_factor);
int cpu_drop_tokens(moe_router* r, const int32_t* idx, const float* w, int64_t tokens, double capacity_factor,
                    int policy, int pad, uint8_t* out_map, float* out_probs, uint8_t* out_kept,
                    int32_t* out_kept_counts, int64_t* out_dropped);

// CUDA backend (cuda/*.cu, or moe_cuda_stub.cpp when built without CUDA)
int cuda_device_count();
int cuda_compiled();
int cuda_router_init(moe_router* r, int device);
void cuda_router_release(moe_router* r);
// Copies `bias` [experts] to the device once the direct calls in flight are done; later calls rank by R.
int cuda_set_bias(moe_router* r, const float* bias);
int cuda_route(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
               const uint8_t* replay_mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
               int64_t* out_nonfinite, void* stream);
int cuda_route_host(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* replay_idx,
                    const uint8_t* replay_mask, int32_t* out_idx, float* out_w, uint8_t* out_flags,
                    int64_t* out_nonfinite);
int cuda_backward(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                  const float* grad_w, const uint8_t* flags, float* grad_logits, void* stream);
int cuda_backward_host(moe_router* r, const void* logits, int dtype, int64_t tokens, const int32_t* idx,
                       const float* grad_w, const uint8_t* flags, float* grad_logits);
int cuda_check_replay(moe_router* r, int64_t* bad_row, int* reason);
// Spec section 6 on device pointers (arguments checked; moe_api_training.cpp). Workspaces: the sizes below.
int cuda_valid_tokens(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* padding,
                      uint8_t* out_valid, int64_t* out_count, void* stream);
// idx [tokens, k] (validated on the device) or map [tokens, E].
int cuda_tokens_per_expert(moe_router* r, const int32_t* idx, const uint8_t* map, const uint8_t* valid,
                           int64_t tokens, int32_t* counts, void* stream);
int cuda_losses(moe_router* r, const void* logits, int dtype, int64_t tokens, const uint8_t* valid,
                const moe_loss_config& config, moe_loss_values* out, int32_t* out_counts, float* out_scores,
                uint8_t* out_map, float* grad, void* workspace, void* stream);
int cuda_drop_tokens(moe_router* r, const int32_t* idx, const float* w, int64_t tokens, int64_t cap, int policy,
                     int pad, uint8_t* out_map, float* out_probs, uint8_t* out_kept, int32_t* out_kept_counts,
                     int64_t* out_dropped, void* workspace, void* stream);
int64_t cuda_losses_workspace(const moe_loss_config& config, int64_t tokens, int experts, bool aux_outputs);
int64_t cuda_drop_workspace(int64_t tokens, int k, int experts, int policy);

int cuda_malloc(int device, int64_t bytes, void** out);
int cuda_free(void* ptr);
int cuda_memcpy(void* dst, const void* src, int64_t bytes);
int cuda_stream_create(int device, void** out);
int cuda_stream_destroy(void* stream);
int cuda_stream_synchronize(void* stream);
int cuda_routing_agreement(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t row_stride, int experts,
                           int64_t* d_out2, uint8_t* d_row_differs, void* stream);

}  // namespace moe

#endif  // MOE_INTERNAL_H_
