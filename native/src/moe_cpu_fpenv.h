// SPDX-License-Identifier: Apache-2.0
// The CPU backend's floating-point environment. Its results are defined with IEEE defaults (round to
// nearest, subnormals kept, exceptions masked), and the caller's thread may run with something else:
// FTZ/DAZ set by a library compiled with -ffast-math (crtfastmath.o sets them for the whole process at
// load), by oneDNN/MKL, or by hand. Under DAZ a subnormal logit reads as 0 (its score key changes);
// under FTZ a subnormal exponential or weight becomes 0. Each entry point installs the default
// environment for the duration of the call and restores the caller's; pool workers install it for
// each piece of work (they inherit the state of whichever thread created them).
#ifndef MOE_CPU_FPENV_H_
#define MOE_CPU_FPENV_H_

#include <stdint.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace moe {

class FpEnvGuard {
 public:
#if defined(__x86_64__) || defined(__i386__)
  // MXCSR: every exception masked (0x1f80), round to nearest, FTZ (bit 15) and DAZ (bit 6) clear; the
  // sticky status flags (bits 0-5) are kept. ldmxcsr only when the state differs: it is not free.
  FpEnvGuard() : saved_(_mm_getcsr()) {
    const uint32_t want = kDefault | (saved_ & 0x3fu);
    if (want != saved_) _mm_setcsr(want);
  }
  ~FpEnvGuard() {
    if (_mm_getcsr() != saved_) _mm_setcsr(saved_);
  }
  static constexpr uint32_t kDefault = 0x1f80u;

 private:
  uint32_t saved_;
#elif defined(__aarch64__)
  // FPCR: FZ (bit 24), FZ16 (bit 19), DN (bit 25), rounding (bits 22-23) and the trap enables cleared.
  FpEnvGuard() {
    __asm__ volatile("mrs %0, fpcr" : "=r"(saved_));
    const uint64_t want = saved_ & ~((1ull << 24) | (1ull << 25) | (1ull << 19) | (3ull << 22) | 0x9f00ull);
    if (want != saved_) __asm__ volatile("msr fpcr, %0" : : "r"(want));
  }
  ~FpEnvGuard() { __asm__ volatile("msr fpcr, %0" : : "r"(saved_)); }

 private:
  uint64_t saved_;
#else
  FpEnvGuard() {}
#endif
  FpEnvGuard(const FpEnvGuard&) = delete;
  FpEnvGuard& operator=(const FpEnvGuard&) = delete;
};

}  // namespace moe

#endif  // MOE_CPU_FPENV_H_
