// SPDX-License-Identifier: Apache-2.0
// Routing agreement of two selections on the device (moe_routing_agreement_device): per row the
// number of common experts (sum over i, j of a_i == b_j, as the host version), rows whose sets
// differ, and optionally a per-row flag. One thread per row; one atomic pair per warp.
#include "moe_cuda_common.cuh"

namespace moe {
namespace {

__global__ void __launch_bounds__(256)
    agreement_kernel(const int32_t* __restrict__ a, const int32_t* __restrict__ b, int64_t rows, int k,
                     int64_t stride, unsigned long long* __restrict__ out2, uint8_t* __restrict__ row_differs) {
  unsigned long long differ = 0, overlap = 0;
  for (int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; r < rows; r += (int64_t)gridDim.x * blockDim.x) {
    const int32_t* ra = a + r * stride;
    const int32_t* rb = b + r * stride;
    int common = 0;
    for (int i = 0; i < k; ++i) {
      const int32_t ai = __ldg(ra + i);
      for (int j = 0; j < k; ++j) common += ai == __ldg(rb + j);
    }
    overlap += (unsigned long long)common;
    differ += common != k;
    if (row_differs) row_differs[r] = (uint8_t)(common != k);
  }
  for (int off = 16; off > 0; off >>= 1) {
    differ += __shfl_xor_sync(dev::kFull, differ, off);
    overlap += __shfl_xor_sync(dev::kFull, overlap, off);
  }
  if ((threadIdx.x & 31) == 0) {
    if (differ) atomicAdd(&out2[0], differ);
    if (overlap) atomicAdd(&out2[1], overlap);
  }
}

}  // namespace

cudaError_t launch_agreement(const int32_t* a, const int32_t* b, int64_t rows, int k, int64_t row_stride,
                             unsigned long long* out2, uint8_t* row_differs, cudaStream_t stream) {
  cudaError_t e = cudaMemsetAsync(out2, 0, 2 * sizeof(unsigned long long), stream);
  if (e != cudaSuccess || rows <= 0) return e;
  int dev_id = 0, sms = 1;
  if (cudaGetDevice(&dev_id) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev_id) != cudaSuccess)
    sms = 1;
  const unsigned grid = grid_for(rows, 256, sms, 8);
  return launch_kernel(agreement_kernel, grid, 256, 0, stream, a, b, rows, k, row_stride, out2, row_differs);
}

}  // namespace moe
