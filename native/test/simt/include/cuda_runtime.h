// SPDX-License-Identifier: Apache-2.0
// SIMT host emulation of the CUDA runtime (moe-router's kernel harness, docs/cuda-harness.md).
// The kernel sources of native/src/cuda/ compile against this header with g++ and run on the CPU:
// every CUDA thread is a fiber, warp collectives and block barriers are real rendezvous points, and
// streams are queues that a single emulated device drains in a selectable order. Only what the
// project's sources use (and their obvious neighbours) is emulated; anything else fails to compile.
#ifndef SIMT_CUDA_RUNTIME_H_
#define SIMT_CUDA_RUNTIME_H_

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#define MOE_SIMT 1
#ifndef CUDART_VERSION
#define CUDART_VERSION 12000  // the API level emulated (launch, capture and user-object calls of CUDA 12)
#endif

// ------------------------------------------------------------------------------ qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __grid_constant__
#define __managed__
#define __constant__
#define __align__(n) __attribute__((aligned(n)))
// One copy per OS thread: blocks of one launch run one after another on the executing thread, so a
// static is the block's shared memory. Dynamic shared memory (`extern __shared__`) is rewritten by
// simt_transform.cmake into a pointer to a fresh, poisoned, guard-paged buffer per block.
#define __shared__ static thread_local
#define warpSize 32

// ------------------------------------------------------------------------------ vector types
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

#define SIMT_VEC2(N, T, A)             \
  struct __attribute__((aligned(A))) N { \
    T x, y;                            \
  };                                   \
  inline N make_##N(T a, T b) { return N{a, b}; }
#define SIMT_VEC4(N, T, A)             \
  struct __attribute__((aligned(A))) N { \
    T x, y, z, w;                      \
  };                                   \
  inline N make_##N(T a, T b, T c, T d) { return N{a, b, c, d}; }
SIMT_VEC2(int2, int, 8)
SIMT_VEC2(uint2, unsigned, 8)
SIMT_VEC2(float2, float, 8)
SIMT_VEC2(double2, double, 16)
SIMT_VEC2(longlong2, long long, 16)
SIMT_VEC2(ulonglong2, unsigned long long, 16)
SIMT_VEC2(short2, short, 4)
SIMT_VEC2(ushort2, unsigned short, 4)
SIMT_VEC4(int4, int, 16)
SIMT_VEC4(uint4, unsigned, 16)
SIMT_VEC4(float4, float, 16)
SIMT_VEC4(short4, short, 8)
SIMT_VEC4(ushort4, unsigned short, 8)
SIMT_VEC4(char4, signed char, 4)
SIMT_VEC4(uchar4, unsigned char, 4)
#undef SIMT_VEC2
#undef SIMT_VEC4

// ------------------------------------------------------------------------------ runtime types
typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalState = 401,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchFailure = 719,
  cudaErrorNotSupported = 801,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureMerge = 902,
  cudaErrorStreamCaptureUnmatched = 903,
  cudaErrorStreamCaptureUnjoined = 904,
  cudaErrorStreamCaptureIsolation = 905,
  cudaErrorStreamCaptureImplicit = 906,
  cudaErrorCapturedEvent = 907,
  cudaErrorStreamCaptureWrongThread = 908,
  cudaErrorUnknown = 999
} cudaError_t;

struct CUstream_st;
struct CUevent_st;
struct CUgraph_st;
struct CUgraphExec_st;
struct CUuserObject_st;
struct CUgraphNode_st;
typedef CUstream_st* cudaStream_t;
typedef CUevent_st* cudaEvent_t;
typedef CUgraph_st* cudaGraph_t;
typedef CUgraphExec_st* cudaGraphExec_t;
typedef CUuserObject_st* cudaUserObject_t;
typedef CUgraphNode_st* cudaGraphNode_t;
typedef void (*cudaHostFn_t)(void* user_data);

#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)
#define cudaStreamDefault 0x00
#define cudaStreamNonBlocking 0x01
#define cudaEventDefault 0x00
#define cudaEventBlockingSync 0x01
#define cudaEventDisableTiming 0x02
#define cudaEventWaitDefault 0x00
#define cudaEventWaitExternal 0x01
#define cudaEventRecordDefault 0x00
#define cudaHostAllocDefault 0x00
#define cudaUserObjectNoDestructorSync 0x1
#define cudaGraphUserObjectMove 0x1

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2
};
enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2
};
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrL2CacheSize = 38,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrMemoryPoolsSupported = 115
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  size_t sharedMemPerBlock;
  size_t sharedMemPerBlockOptin;
  int regsPerBlock;
  int warpSize_;
  int maxThreadsPerBlock;
  int maxThreadsDim[3];
  int maxGridSize[3];
  int major;
  int minor;
  int multiProcessorCount;
  int l2CacheSize;
  int memoryBusWidth;
  int memoryClockRate;
  int clockRate;
};

struct cudaLaunchAttribute;
struct cudaLaunchConfig_t {
  dim3 gridDim;
  dim3 blockDim;
  size_t dynamicSmemBytes;
  cudaStream_t stream;
  cudaLaunchAttribute* attrs;
  unsigned int numAttrs;
};

// ------------------------------------------------------------------------------ emulator core
namespace simt {

// Collective kinds (warp: mask-matched rendezvous; block: every live thread of the block).
enum Op : int {
  kShflIdx = 1, kShflUp, kShflDown, kShflXor,
  kVoteAny, kVoteAll, kBallot, kMatchAny, kMatchAll,
  kReduceAdd, kReduceMin, kReduceMax, kReduceAnd, kReduceOr, kReduceXor,
  kSyncWarp,
  kBarSync, kBarOr, kBarAnd, kBarCount
};
// Waits until every lane of `mask` has arrived at the same collective, then returns this lane's
// result. `flags`: bit 0 = signed operands (reduce min/max). `aux` receives a second result
// (match_all's predicate).
uint64_t warp_collective(int op, unsigned mask, uint64_t value, int arg, int width, int flags, int* aux);
int block_barrier(int op, int predicate);
unsigned active_mask();
void* dynamic_shared();
[[noreturn]] void trap(const char* why);

using KernelBody = std::function<void()>;
cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, KernelBody body);

// Harness controls (tests of the project use these through #ifdef MOE_SIMT only).
const char* order_name();            // "forward", "reverse" or "random:SEED" (SIMT_ORDER)
int sm_count();                      // SIMT_SMS, default 2 so that grid-stride loops iterate
void set_device_memory_limit(size_t bytes);  // later cudaMalloc beyond it fail (error paths)
unsigned long long launches();       // kernels run so far

template <class T>
inline uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp collectives move at most 64 bits");
  uint64_t u = 0;
  memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
inline T from_bits(uint64_t u) {
  T v;
  memcpy(&v, &u, sizeof(T));
  return v;
}

// `kernel<<<cfg>>>(args)` is rewritten to `::simt::Chevron(cfg)(kernel, args)` (simt_transform.cmake).
struct Chevron {
  cudaLaunchConfig_t cfg;
  Chevron(dim3 g, dim3 b, size_t smem = 0, cudaStream_t s = 0) : cfg() {
    cfg.gridDim = g;
    cfg.blockDim = b;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
  }
  template <class... Exp, class... Act>
  void operator()(void (*kernel)(Exp...), Act&&... args) const;
};

}  // namespace simt

// Built-ins of the running CUDA thread: the scheduler sets them before it resumes a fiber (one
// fiber runs at a time on a host thread).
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local uint3 blockDim;
extern thread_local uint3 gridDim;

// ------------------------------------------------------------------------------ warp and block collectives
template <class T>
inline T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  return simt::from_bits<T>(simt::warp_collective(simt::kShflIdx, mask, simt::to_bits(var), src_lane, width, 0, nullptr));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return simt::from_bits<T>(simt::warp_collective(simt::kShflUp, mask, simt::to_bits(var), (int)delta, width, 0, nullptr));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return simt::from_bits<T>(simt::warp_collective(simt::kShflDown, mask, simt::to_bits(var), (int)delta, width, 0, nullptr));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return simt::from_bits<T>(simt::warp_collective(simt::kShflXor, mask, simt::to_bits(var), lane_mask, width, 0, nullptr));
}
inline int __any_sync(unsigned mask, int pred) {
  return (int)simt::warp_collective(simt::kVoteAny, mask, pred != 0, 0, 32, 0, nullptr);
}
inline int __all_sync(unsigned mask, int pred) {
  return (int)simt::warp_collective(simt::kVoteAll, mask, pred != 0, 0, 32, 0, nullptr);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return (unsigned)simt::warp_collective(simt::kBallot, mask, pred != 0, 0, 32, 0, nullptr);
}
template <class T>
inline unsigned __match_any_sync(unsigned mask, T value) {
  return (unsigned)simt::warp_collective(simt::kMatchAny, mask, simt::to_bits(value), 0, 32, 0, nullptr);
}
template <class T>
inline unsigned __match_all_sync(unsigned mask, T value, int* pred) {
  return (unsigned)simt::warp_collective(simt::kMatchAll, mask, simt::to_bits(value), 0, 32, 0, pred);
}
#define SIMT_REDUCE(NAME, OP)                                                                           \
  inline unsigned NAME(unsigned mask, unsigned v) {                                                     \
    return (unsigned)simt::warp_collective(OP, mask, v, 0, 32, 0, nullptr);                             \
  }                                                                                                     \
  inline int NAME(unsigned mask, int v) {                                                               \
    return (int)(uint32_t)simt::warp_collective(OP, mask, (uint32_t)v, 0, 32, 1, nullptr);              \
  }
SIMT_REDUCE(__reduce_add_sync, simt::kReduceAdd)
SIMT_REDUCE(__reduce_min_sync, simt::kReduceMin)
SIMT_REDUCE(__reduce_max_sync, simt::kReduceMax)
#undef SIMT_REDUCE
inline unsigned __reduce_and_sync(unsigned mask, unsigned v) {
  return (unsigned)simt::warp_collective(simt::kReduceAnd, mask, v, 0, 32, 0, nullptr);
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned v) {
  return (unsigned)simt::warp_collective(simt::kReduceOr, mask, v, 0, 32, 0, nullptr);
}
inline unsigned __reduce_xor_sync(unsigned mask, unsigned v) {
  return (unsigned)simt::warp_collective(simt::kReduceXor, mask, v, 0, 32, 0, nullptr);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::warp_collective(simt::kSyncWarp, mask, 0, 0, 32, 0, nullptr); }
inline unsigned __activemask() { return simt::active_mask(); }
inline void __syncthreads() { simt::block_barrier(simt::kBarSync, 0); }
inline int __syncthreads_or(int p) { return simt::block_barrier(simt::kBarOr, p); }
inline int __syncthreads_and(int p) { return simt::block_barrier(simt::kBarAnd, p); }
inline int __syncthreads_count(int p) { return simt::block_barrier(simt::kBarCount, p); }

// ------------------------------------------------------------------------------ memory access, fences
// Only one kernel runs at a time on the emulated device, so loads and stores need no emulation.
#define SIMT_PLAIN_LOAD(name)    \
  template <class T>             \
  inline T name(const T* p) {    \
    return *p;                   \
  }
#define SIMT_PLAIN_STORE(name)   \
  template <class T>             \
  inline void name(T* p, T v) {  \
    *p = v;                      \
  }
SIMT_PLAIN_LOAD(__ldg)
SIMT_PLAIN_LOAD(__ldcg)
SIMT_PLAIN_LOAD(__ldca)
SIMT_PLAIN_LOAD(__ldcs)
SIMT_PLAIN_LOAD(__ldlu)
SIMT_PLAIN_LOAD(__ldcv)
SIMT_PLAIN_STORE(__stcg)
SIMT_PLAIN_STORE(__stcs)
SIMT_PLAIN_STORE(__stwb)
SIMT_PLAIN_STORE(__stwt)
#undef SIMT_PLAIN_LOAD
#undef SIMT_PLAIN_STORE
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) {}
[[noreturn]] inline void __trap() { simt::trap("__trap()"); }
long long clock64();
inline long clock() { return (long)clock64(); }

// ------------------------------------------------------------------------------ atomics
#define SIMT_ATOMIC_INT(T)                                                                                 \
  inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_RELAXED); }                    \
  inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_RELAXED); }                    \
  inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_RELAXED); }                  \
  inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_RELAXED); }                    \
  inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_RELAXED); }                      \
  inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_RELAXED); }                    \
  inline T atomicCAS(T* a, T cmp, T v) {                                                                   \
    __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);                    \
    return cmp;                                                                                            \
  }                                                                                                        \
  inline T atomicMin(T* a, T v) {                                                                          \
    T o = __atomic_load_n(a, __ATOMIC_RELAXED);                                                            \
    while (v < o && !__atomic_compare_exchange_n(a, &o, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {  \
    }                                                                                                      \
    return o;                                                                                              \
  }                                                                                                        \
  inline T atomicMax(T* a, T v) {                                                                          \
    T o = __atomic_load_n(a, __ATOMIC_RELAXED);                                                            \
    while (v > o && !__atomic_compare_exchange_n(a, &o, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {  \
    }                                                                                                      \
    return o;                                                                                              \
  }
SIMT_ATOMIC_INT(int)
SIMT_ATOMIC_INT(unsigned)
SIMT_ATOMIC_INT(unsigned long long)
SIMT_ATOMIC_INT(long long)
#undef SIMT_ATOMIC_INT
inline unsigned short atomicCAS(unsigned short* a, unsigned short cmp, unsigned short v) {
  __atomic_compare_exchange_n(a, &cmp, v, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return cmp;
}
inline unsigned atomicInc(unsigned* a, unsigned lim) {
  unsigned o = __atomic_load_n(a, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(a, &o, o >= lim ? 0u : o + 1u, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return o;
}
inline unsigned atomicDec(unsigned* a, unsigned lim) {
  unsigned o = __atomic_load_n(a, __ATOMIC_RELAXED);
  while (!__atomic_compare_exchange_n(a, &o, (o == 0u || o > lim) ? lim : o - 1u, false, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED)) {
  }
  return o;
}
template <class F, class U>
inline F simt_atomic_float_rmw(F* a, F v, int op) {
  U* p = reinterpret_cast<U*>(a);
  U o = __atomic_load_n(p, __ATOMIC_RELAXED);
  for (;;) {
    F of;
    memcpy(&of, &o, sizeof of);
    F nf = op == 0 ? of + v : v;
    U n;
    memcpy(&n, &nf, sizeof n);
    if (__atomic_compare_exchange_n(p, &o, n, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return of;
  }
}
inline float atomicAdd(float* a, float v) { return simt_atomic_float_rmw<float, uint32_t>(a, v, 0); }
inline double atomicAdd(double* a, double v) { return simt_atomic_float_rmw<double, uint64_t>(a, v, 0); }
inline float atomicExch(float* a, float v) { return simt_atomic_float_rmw<float, uint32_t>(a, v, 1); }
#define atomicAdd_block atomicAdd
#define atomicAdd_system atomicAdd
#define atomicMin_block atomicMin
#define atomicMax_block atomicMax
#define atomicExch_block atomicExch
#define atomicCAS_block atomicCAS
#define atomicOr_block atomicOr

// ------------------------------------------------------------------------------ intrinsics
// Host IEEE arithmetic is round-to-nearest-even without FTZ, as the device with -ftz=false; the
// harness is compiled with -ffp-contract=off so that these stay single rounded operations.
inline float __int_as_float(int i) { return simt::from_bits<float>((uint32_t)i); }
inline int __float_as_int(float f) { return (int)(uint32_t)simt::to_bits(f); }
inline float __uint_as_float(unsigned u) { return simt::from_bits<float>(u); }
inline unsigned __float_as_uint(float f) { return (unsigned)simt::to_bits(f); }
inline double __longlong_as_double(long long i) { return simt::from_bits<double>((uint64_t)i); }
inline long long __double_as_longlong(double d) { return (long long)simt::to_bits(d); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
// Directed roundings (fesetround around one operation; simt_runtime.cpp is built with -frounding-math).
float __fadd_rz(float a, float b);
float __fmul_rz(float a, float b);
float __fdiv_rz(float a, float b);
float __fadd_ru(float a, float b);
float __fadd_rd(float a, float b);
float __fmul_ru(float a, float b);
float __fmul_rd(float a, float b);
inline float __saturatef(float x) { return x != x ? 0.0f : x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline int __float2int_rz(float f) { return (int)f; }
inline int __float2int_rn(float f) { return (int)nearbyintf(f); }
inline int __float2int_rd(float f) { return (int)floorf(f); }
inline int __float2int_ru(float f) { return (int)ceilf(f); }
inline unsigned __float2uint_rz(float f) { return (unsigned)f; }
inline unsigned __float2uint_rn(float f) { return (unsigned)nearbyintf(f); }
inline float __int2float_rn(int i) { return (float)i; }
inline float __uint2float_rn(unsigned u) { return (float)u; }
inline float __ll2float_rn(long long i) { return (float)i; }
inline float __ull2float_rn(unsigned long long u) { return (float)u; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
  return __builtin_bswap32(x);
}
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((uint64_t)a * b) >> 32); }
inline int __mulhi(int a, int b) { return (int)(((int64_t)a * b) >> 32); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}
inline unsigned __funnelshift_l(unsigned lo, unsigned hi, unsigned s) {
  s &= 31;
  return s ? (hi << s) | (lo >> (32 - s)) : hi;
}
inline unsigned __funnelshift_r(unsigned lo, unsigned hi, unsigned s) {
  s &= 31;
  return s ? (lo >> s) | (hi << (32 - s)) : lo;
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const uint64_t v = ((uint64_t)y << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
  return r;
}
// CUDA's device min/max overloads (the host has only std::min/std::max).
#define SIMT_MINMAX(T)                          \
  inline T min(T a, T b) { return a < b ? a : b; } \
  inline T max(T a, T b) { return a > b ? a : b; }
SIMT_MINMAX(int)
SIMT_MINMAX(unsigned)
SIMT_MINMAX(long long)
SIMT_MINMAX(unsigned long long)
#undef SIMT_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }

// ------------------------------------------------------------------------------ runtime API
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaDriverGetVersion(int* version);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);

cudaError_t cudaMalloc(void** ptr, size_t bytes);
template <class T>
inline cudaError_t cudaMalloc(T** ptr, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFree(void* ptr);
cudaError_t cudaMallocHost(void** ptr, size_t bytes);
template <class T>
inline cudaError_t cudaMallocHost(T** ptr, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(ptr), bytes);
}
cudaError_t cudaFreeHost(void* ptr);
cudaError_t cudaMemset(void* ptr, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t stream = 0);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = 0);

cudaError_t cudaStreamCreate(cudaStream_t* stream);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int flags);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamQuery(cudaStream_t stream);
cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags = 0);
cudaError_t cudaLaunchHostFunc(cudaStream_t stream, cudaHostFn_t fn, void* user_data);

cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int flags);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = 0);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status);
cudaError_t cudaStreamGetCaptureInfo(cudaStream_t stream, cudaStreamCaptureStatus* status, unsigned long long* id = 0,
                                     cudaGraph_t* graph = 0, const cudaGraphNode_t** deps = 0, size_t* num_deps = 0);
cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);

cudaError_t cudaUserObjectCreate(cudaUserObject_t* object, void* ptr, cudaHostFn_t destroy, unsigned int refs,
                                 unsigned int flags);
cudaError_t cudaUserObjectRetain(cudaUserObject_t object, unsigned int count = 1);
cudaError_t cudaUserObjectRelease(cudaUserObject_t object, unsigned int count = 1);
cudaError_t cudaGraphRetainUserObject(cudaGraph_t graph, cudaUserObject_t object, unsigned int count = 1,
                                      unsigned int flags = 0);
cudaError_t cudaGraphReleaseUserObject(cudaGraph_t graph, cudaUserObject_t object, unsigned int count = 1);

cudaError_t simt_func_set_attribute(const void* func, cudaFuncAttribute attr, int value);
template <class T>
inline cudaError_t cudaFuncSetAttribute(T* func, cudaFuncAttribute attr, int value) {
  return simt_func_set_attribute(reinterpret_cast<const void*>(func), attr, value);
}

// Occupancy: what a device of the emulated kind (sm_90, 2048 threads and 32 blocks per SM) allows for
// the block size, ignoring registers and shared memory (the host compiler allocates no registers);
// launchers that size their grid from it still turn their grid-stride loops several times here.
cudaError_t simt_occupancy(int* blocks, const void* func, int block_size, size_t dyn_smem);
template <class T>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, T* func, int block_size,
                                                                 size_t dyn_smem) {
  return simt_occupancy(blocks, reinterpret_cast<const void*>(func), block_size, dyn_smem);
}

// Launch with the arguments converted to the kernel's parameter types now, as the runtime does
// (a captured launch keeps these values; a later launch of the graph replays them).
template <class... Exp, class... Act>
inline cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* config, void (*kernel)(Exp...), Act&&... args) {
  static_assert(sizeof...(Exp) == sizeof...(Act), "kernel argument count");
  auto packed = std::make_shared<std::tuple<std::decay_t<Exp>...>>(static_cast<Exp>(std::forward<Act>(args))...);
  return simt::launch(reinterpret_cast<const void*>(kernel), config->gridDim, config->blockDim,
                      config->dynamicSmemBytes, config->stream, [kernel, packed] { std::apply(kernel, *packed); });
}

template <class... Exp, class... Act>
inline void simt::Chevron::operator()(void (*kernel)(Exp...), Act&&... args) const {
  (void)cudaLaunchKernelEx(&cfg, kernel, std::forward<Act>(args)...);  // errors: cudaGetLastError, as for <<<>>>
}

#endif  // SIMT_CUDA_RUNTIME_H_
