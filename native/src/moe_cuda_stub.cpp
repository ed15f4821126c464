// SPDX-License-Identifier: Apache-2.0
// CUDA entry points for a build without nvcc: every CUDA call reports MOE_ERR_UNSUPPORTED.
#include "moe_internal.h"

namespace moe {

static int no_cuda() {
  return fail(MOE_ERR_UNSUPPORTED,
              "this moe-router library has no CUDA kernels (the CPU-only linux-x86_64 jar, or a build without nvcc)");
}

int cuda_device_count() { return 0; }
int cuda_compiled() { return 0; }
int cuda_router_init(moe_router*, int) { return no_cuda(); }
void cuda_router_release(moe_router*) {}
int cuda_set_bias(moe_router*, const float*) { return no_cuda(); }
int cuda_route(moe_router*, const void*, int, int64_t, const int32_t*, const uint8_t*, int32_t*, float*, uint8_t*,
               int64_t*, void*) {
  return no_cuda();
}
int cuda_route_host(moe_router*, const void*, int, int64_t, const int32_t*, const uint8_t*, int32_t*, float*,
                    uint8_t*, int64_t*) {
  return no_cuda();
}
int cuda_backward(moe_router*, const void*, int, int64_t, const int32_t*, const float*, const uint8_t*, float*,
                  void*) {
  return no_cuda();
}
int cuda_backward_host(moe_router*, const void*, int, int64_t, const int32_t*, const float*, const uint8_t*, float*) {
  return no_cuda();
}
int cuda_check_replay(moe_router*, int64_t*, int*) { return no_cuda(); }
int cuda_valid_tokens(moe_router*, const void*, int, int64_t, const uint8_t*, uint8_t*, int64_t*, void*) {
  return no_cuda();
}
int cuda_tokens_per_expert(moe_router*, const int32_t*, const uint8_t*, const uint8_t*, int64_t, int32_t*, void*) {
  return no_cuda();
}
int cuda_losses(moe_router*, const void*, int, int64_t, const uint8_t*, const moe_loss_config&, moe_loss_values*,
                int32_t*, float*, uint8_t*, float*, void*, void*) {
  return no_cuda();
}
int cuda_drop_tokens(moe_router*, const int32_t*, const float*, int64_t, int64_t, int, int, uint8_t*, float*,
                     uint8_t*, int32_t*, int64_t*, void*, void*) {
  return no_cuda();
}
int64_t cuda_losses_workspace(const moe_loss_config&, int64_t, int, bool) { return 0; }
int64_t cuda_drop_workspace(int64_t, int, int, int) { return 0; }
int cuda_malloc(int, int64_t, void**) { return no_cuda(); }
int cuda_free(void*) { return no_cuda(); }
int cuda_memcpy(void*, const void*, int64_t) { return no_cuda(); }
int cuda_stream_create(int, void**) { return no_cuda(); }
int cuda_stream_destroy(void*) { return no_cuda(); }
int cuda_stream_synchronize(void*) { return no_cuda(); }
int cuda_routing_agreement(const int32_t*, const int32_t*, int64_t, int, int64_t, int, int64_t*, uint8_t*, void*) {
  return no_cuda();
}

}  // namespace moe
