// SPDX-License-Identifier: Apache-2.0
// Keeps libjnimoerouter.so loadable on glibc 2.17 (RHEL/CentOS 7, Amazon Linux 2, RHEL 8, Ubuntu 20.04)
// when it is built on a newer glibc. Linked whole into the JNI library (never into an archive that the
// linker may skip), so every object in the link, including the static libstdc++ and the static CUDA
// runtime, binds to these definitions instead of the newest default versions in libc.so.6.
// The floor is checked by NativeCompatibilityTest; a new symbol above it fails that test, not a user.
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

// __GLIBC__ comes from the headers above; musl and other platforms get an empty object.
#if defined(__linux__) && defined(__x86_64__) && defined(__GLIBC__)

// glibc 2.34 moved libpthread, libdl and librt into libc.so.6 and gave those functions a new default
// version (GLIBC_2.34); the old versions stay exported for old binaries. Each trampoline below is a
// hidden local definition that jumps to the old version. A jump (not a call) keeps the caller's return
// address, which dlopen/dlsym use to find the calling object. On a glibc older than 2.34 the old
// versions live in libpthread.so.0, libdl.so.2 and librt.so.1, which the link lists as needed.
#define MOE_GLIBC_OLD(sym, ver)                                                         \
  __asm__(".symver moe_glibc_old_" #sym ", " #sym "@" ver "\n"                          \
          ".text\n"                                                                     \
          ".globl " #sym "\n"                                                           \
          ".hidden " #sym "\n"                                                          \
          ".type " #sym ", @function\n"                                                 \
          ".p2align 4\n" #sym ":\n"                                                     \
          "\tjmp moe_glibc_old_" #sym "@PLT\n"                                          \
          ".size " #sym ", .-" #sym "\n");

// Referenced by the static CUDA runtime (thread pool, IPC, driver loading) and by libstdc++.
MOE_GLIBC_OLD(dlclose, "GLIBC_2.2.5")
MOE_GLIBC_OLD(dlerror, "GLIBC_2.2.5")
MOE_GLIBC_OLD(dlmopen, "GLIBC_2.3.4")
MOE_GLIBC_OLD(dlopen, "GLIBC_2.2.5")
MOE_GLIBC_OLD(dlsym, "GLIBC_2.2.5")
MOE_GLIBC_OLD(dlvsym, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_condattr_setpshared, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_create, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_detach, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_getspecific, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_join, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_key_create, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_key_delete, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_kill, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_mutex_trylock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_mutexattr_destroy, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_mutexattr_init, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_mutexattr_setpshared, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_mutexattr_settype, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_once, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlock_destroy, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlock_init, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlock_rdlock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlock_timedrdlock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlock_timedwrlock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlock_tryrdlock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlock_trywrlock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlock_unlock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlock_wrlock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlockattr_destroy, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlockattr_init, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_rwlockattr_setpshared, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_setspecific, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_spin_destroy, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_spin_init, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_spin_lock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_spin_trylock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(pthread_spin_unlock, "GLIBC_2.2.5")
MOE_GLIBC_OLD(sem_destroy, "GLIBC_2.2.5")
MOE_GLIBC_OLD(sem_init, "GLIBC_2.2.5")
MOE_GLIBC_OLD(sem_post, "GLIBC_2.2.5")
MOE_GLIBC_OLD(sem_timedwait, "GLIBC_2.2.5")
MOE_GLIBC_OLD(sem_trywait, "GLIBC_2.2.5")
MOE_GLIBC_OLD(sem_wait, "GLIBC_2.2.5")
MOE_GLIBC_OLD(shm_open, "GLIBC_2.2.5")
MOE_GLIBC_OLD(shm_unlink, "GLIBC_2.2.5")

// glibc 2.29 made log() skip the SVID error wrapper (new default version). The old version wraps the
// same core routine; it differs only in errno handling for x <= 0, which the z-loss never passes.
MOE_GLIBC_OLD(log, "GLIBC_2.2.5")

extern "C" {

// libstdc++ (2.32+ builds) reads this to skip atomic reference counting while a process has one
// thread. A JVM never has one thread, and 0 ("maybe multi-threaded") is always the safe answer.
__attribute__((visibility("hidden"))) char __libc_single_threaded = 0;

// std::random_device (pulled into the static libstdc++ by std::string's exception paths, unused here)
// references getentropy (2.25) and arc4random (2.36). Both are served by the getrandom system call.
static int moe_fill_random(void* buffer, size_t length) {
  unsigned char* p = static_cast<unsigned char*>(buffer);
  while (length > 0) {
    long n = syscall(SYS_getrandom, p, length, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += n;
    length -= static_cast<size_t>(n);
  }
  return 0;
}

// Defined under other C++ names (asm labels give the symbol) so the libc headers' declarations, which
// differ in exception specification, do not clash.
__attribute__((visibility("hidden"))) int moe_getentropy(void* buffer, size_t length) __asm__("getentropy");
__attribute__((visibility("hidden"))) uint32_t moe_arc4random(void) __asm__("arc4random");

int moe_getentropy(void* buffer, size_t length) {
  if (length > 256) {  // the getentropy contract (OpenBSD, glibc): at most 256 bytes per call
    errno = EIO;
    return -1;
  }
  return moe_fill_random(buffer, length);
}

uint32_t moe_arc4random(void) {
  uint32_t v;
  if (moe_fill_random(&v, sizeof v) == 0) return v;
  // Kernels before 3.17 have no getrandom: read the urandom device, as glibc's own fallback does.
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ssize_t n = read(fd, &v, sizeof v);
    close(fd);
    if (n == static_cast<ssize_t>(sizeof v)) return v;
  }
  abort();  // arc4random cannot fail by contract; glibc aborts here too
}

}  // extern "C"

#endif
