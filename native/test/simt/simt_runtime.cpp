// SPDX-License-Identifier: Apache-2.0
// SIMT host emulation of the CUDA runtime: fibers, collectives, the emulated device, memory,
// streams, events, capture and graphs (see include/cuda_runtime.h and docs/cuda-harness.md).
//
// Model, in short:
// - A kernel launch is an operation in a stream queue. The device runs one operation at a time,
//   and only when a host thread waits for something (synchronous calls, queries): the waiting
//   thread drains the queues until its condition holds. Which ready stream goes next follows the
//   order (forward/reverse: round robin over the streams in creation order or its reverse, so
//   the operations of concurrent streams interleave; random: a seeded choice), which makes
//   cross-stream and cross-thread orderings that a GPU allows show up in tests.
// - A block runs its threads as fibers on the executing host thread. A fiber runs until it reaches
//   a collective or exits; the scheduler then resolves every collective whose participants have
//   all arrived. Between sync points fibers run in the order (forward, reverse or seeded random),
//   so a result that depends on it reveals a missing __syncthreads/__syncwarp. Blocks of a grid run
//   in the same order. A collective that can never complete stops the process with a report.
// - Device memory is mmap'd with a PROT_NONE page after each allocation, and freed memory stays
//   mapped PROT_NONE: out-of-bounds and use-after-free accesses fault and are reported.
#include "cuda_runtime.h"

#include <cxxabi.h>
#include <dlfcn.h>
#include <elf.h>
#include <fenv.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

// Kernel-side built-ins: one running fiber per host thread at a time, so the scheduler copies the
// fiber's index into threadIdx when it resumes it.
thread_local uint3 threadIdx = {0, 0, 0};
thread_local uint3 blockIdx = {0, 0, 0};
thread_local uint3 blockDim = {1, 1, 1};
thread_local uint3 gridDim = {1, 1, 1};

namespace simt {

namespace {

constexpr int kExitFailure = 86;  // a kernel-level failure (deadlock, fault, misuse): the run is invalid

// ------------------------------------------------------------------------------------ configuration
enum Order { kForward, kReverse, kRandom };

struct Config {
  Order order = kForward;
  uint64_t seed = 1;
  std::string order_name = "forward";
  int sms = 2;
  size_t stack_bytes = 128 << 10;
  std::atomic<size_t> mem_limit{size_t(16) << 30};
};

Config& config() {
  static Config* c = [] {
    Config* k = new Config();
    if (const char* o = getenv("SIMT_ORDER")) {
      std::string s = o;
      if (s == "reverse") {
        k->order = kReverse;
      } else if (s.rfind("random", 0) == 0) {
        k->order = kRandom;
        k->seed = s.size() > 7 && s[6] == ':' ? strtoull(s.c_str() + 7, nullptr, 10) : 1;
      } else if (s != "forward") {
        fprintf(stderr, "SIMT: unknown SIMT_ORDER '%s' (forward, reverse, random[:seed])\n", o);
        _exit(2);
      }
      k->order_name = k->order == kRandom ? "random:" + std::to_string(k->seed) : s;
    }
    if (const char* s = getenv("SIMT_SMS")) k->sms = std::max(1, atoi(s));
    if (const char* s = getenv("SIMT_STACK_KB")) k->stack_bytes = (size_t)std::max(16, atoi(s)) << 10;
    return k;
  }();
  return *c;
}

[[noreturn]] void fatal(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "SIMT FAILURE: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  fflush(stderr);
  fflush(stdout);
  _exit(kExitFailure);
}

// ------------------------------------------------------------------------------------ kernel names
std::string demangle(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string s = status == 0 && d ? d : name;
  free(d);
  return s;
}

// Kernels live in anonymous namespaces (local symbols): dladdr does not see them, .symtab does.
std::string symbol_name(const void* addr) {
  Dl_info info;
  if (!dladdr(addr, &info)) return "kernel@" + std::to_string((uintptr_t)addr);
  if (info.dli_sname && info.dli_saddr == addr) return demangle(info.dli_sname);
  std::string path = info.dli_fname && info.dli_fname[0] ? info.dli_fname : "/proc/self/exe";
  FILE* f = fopen(path.c_str(), "rb");
  if (!f) f = fopen("/proc/self/exe", "rb");
  std::string found;
  if (f) {
    std::vector<char> buf;
    fseek(f, 0, SEEK_END);
    buf.resize((size_t)ftell(f));
    fseek(f, 0, SEEK_SET);
    if (fread(buf.data(), 1, buf.size(), f) == buf.size() && buf.size() > sizeof(Elf64_Ehdr)) {
      const Elf64_Ehdr* eh = reinterpret_cast<const Elf64_Ehdr*>(buf.data());
      const uintptr_t bias = eh->e_type == ET_DYN ? (uintptr_t)info.dli_fbase : 0;
      const Elf64_Shdr* sh = reinterpret_cast<const Elf64_Shdr*>(buf.data() + eh->e_shoff);
      for (int i = 0; i < eh->e_shnum && found.empty(); ++i) {
        if (sh[i].sh_type != SHT_SYMTAB) continue;
        const Elf64_Sym* sym = reinterpret_cast<const Elf64_Sym*>(buf.data() + sh[i].sh_offset);
        const char* str = buf.data() + sh[sh[i].sh_link].sh_offset;
        for (size_t j = 0; j < sh[i].sh_size / sizeof(Elf64_Sym); ++j)
          if (ELF64_ST_TYPE(sym[j].st_info) == STT_FUNC && sym[j].st_value + bias == (uintptr_t)addr) {
            found = demangle(str + sym[j].st_name);
            break;
          }
      }
    }
    fclose(f);
  }
  return found.empty() ? "kernel@" + std::to_string((uintptr_t)addr) : found;
}

// ------------------------------------------------------------------------------------ fibers
enum State { kRunnable, kWaitWarp, kWaitBar, kExited };

struct Fiber {
  void* sp = nullptr;
  uint3 tid{0, 0, 0};
  int index = 0, lane = 0, warp = 0;
  State state = kRunnable;
  int op = 0, arg = 0, width = 32, flags = 0, aux = 0;
  unsigned mask = 0;
  uint64_t val = 0, res = 0;
  char* stack = nullptr;
#if !defined(__x86_64__)
  ucontext_t uc;
#endif
};

struct Launch {
  const void* fn;
  dim3 grid, block;
  size_t smem;
  KernelBody body;
};

struct BlockCtx {
  const Launch* launch = nullptr;
  Fiber* fibers = nullptr;
  int n = 0;
  int exited = 0;
  void* dyn_smem = nullptr;
};

thread_local BlockCtx* tl_ctx = nullptr;
thread_local Fiber* tl_fiber = nullptr;
thread_local void* tl_sched_sp = nullptr;
std::atomic<unsigned long long> g_launches{0};

#if defined(__x86_64__)
// Callee-saved registers, MXCSR and the x87 control word, as the SysV ABI requires across calls.
extern "C" void simt_switch(void** save_sp, void* load_sp);
asm(R"(
.text
.globl simt_switch
.type simt_switch,@function
simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size simt_switch,.-simt_switch
)");
#endif

extern "C" void simt_fiber_entry() {
  tl_ctx->launch->body();
  Fiber* me = tl_fiber;
  me->state = kExited;
  ++tl_ctx->exited;
#if defined(__x86_64__)
  simt_switch(&me->sp, tl_sched_sp);
#else
  setcontext(static_cast<ucontext_t*>(tl_sched_sp));
#endif
  __builtin_unreachable();
}

// Fiber stacks (with a PROT_NONE page below each) are allocated once and reused by every block.
std::vector<char*>& stack_pool() {
  static std::vector<char*>* p = new std::vector<char*>();
  return *p;
}

char* fiber_stack(int i) {
  auto& pool = stack_pool();
  const size_t page = (size_t)sysconf(_SC_PAGESIZE), sz = config().stack_bytes;
  while ((int)pool.size() <= i) {
    char* m = static_cast<char*>(mmap(nullptr, sz + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (m == MAP_FAILED) fatal("cannot map a fiber stack");
    mprotect(m, page, PROT_NONE);
    pool.push_back(m + page);
  }
  return pool[i];
}

void fiber_init(Fiber& f) {
  f.stack = fiber_stack(f.index);
  char* top = f.stack + config().stack_bytes;
#if defined(__x86_64__)
  uintptr_t t = (uintptr_t)top & ~(uintptr_t)15;
  uint64_t* sp = reinterpret_cast<uint64_t*>(t - 16);
  sp[0] = (uint64_t)(uintptr_t)&simt_fiber_entry;  // `ret` target; entry sees rsp % 16 == 8
  sp -= 6;
  for (int r = 0; r < 6; ++r) sp[r] = 0;  // r15 r14 r13 r12 rbx rbp
  sp -= 1;
  uint32_t csr[2];
  asm volatile("stmxcsr %0" : "=m"(csr[0]));
  asm volatile("fnstcw %0" : "=m"(csr[1]));
  memcpy(sp, csr, 8);
  f.sp = sp;
#else
  getcontext(&f.uc);
  f.uc.uc_stack.ss_sp = f.stack;
  f.uc.uc_stack.ss_size = config().stack_bytes;
  f.uc.uc_link = nullptr;
  makecontext(&f.uc, (void (*)())simt_fiber_entry, 0);
  f.sp = &f.uc;
#endif
}

void resume(Fiber& f) {
  tl_fiber = &f;
  threadIdx = f.tid;
#if defined(__x86_64__)
  simt_switch(&tl_sched_sp, f.sp);
#else
  ucontext_t sched;
  tl_sched_sp = &sched;
  swapcontext(&sched, static_cast<ucontext_t*>(f.sp));
#endif
  tl_fiber = nullptr;
}

void yield(Fiber* me) {
#if defined(__x86_64__)
  simt_switch(&me->sp, tl_sched_sp);
#else
  swapcontext(&me->uc, static_cast<ucontext_t*>(tl_sched_sp));
#endif
}

const char* op_name(int op) {
  switch (op) {
    case kShflIdx: return "__shfl_sync";
    case kShflUp: return "__shfl_up_sync";
    case kShflDown: return "__shfl_down_sync";
    case kShflXor: return "__shfl_xor_sync";
    case kVoteAny: return "__any_sync";
    case kVoteAll: return "__all_sync";
    case kBallot: return "__ballot_sync";
    case kMatchAny: return "__match_any_sync";
    case kMatchAll: return "__match_all_sync";
    case kReduceAdd: return "__reduce_add_sync";
    case kReduceMin: return "__reduce_min_sync";
    case kReduceMax: return "__reduce_max_sync";
    case kReduceAnd: return "__reduce_and_sync";
    case kReduceOr: return "__reduce_or_sync";
    case kReduceXor: return "__reduce_xor_sync";
    case kSyncWarp: return "__syncwarp";
    case kBarSync: return "__syncthreads";
    case kBarOr: return "__syncthreads_or";
    case kBarAnd: return "__syncthreads_and";
    case kBarCount: return "__syncthreads_count";
    default: return "?";
  }
}

std::string where() {
  if (!tl_ctx) return "outside any kernel";
  char b[160];
  snprintf(b, sizeof b, " block (%u,%u,%u) of grid (%u,%u,%u), %d threads per block", blockIdx.x,
           blockIdx.y, blockIdx.z, gridDim.x, gridDim.y, gridDim.z, tl_ctx->n);
  return "kernel " + symbol_name(tl_ctx->launch->fn) + b;
}

// One line per warp: runs of lanes in the same state.
std::string describe_block() {
  std::string out;
  BlockCtx& c = *tl_ctx;
  for (int w = 0; w * 32 < c.n; ++w) {
    out += "\n    warp " + std::to_string(w) + ":";
    const int lo = w * 32, cnt = std::min(32, c.n - lo);
    for (int l = 0; l < cnt;) {
      const Fiber& a = c.fibers[lo + l];
      auto desc = [](const Fiber& f) {
        char b[96];
        if (f.state == kExited) return std::string("exited");
        if (f.state == kRunnable) return std::string("running");
        if (f.state == kWaitBar) return std::string("at ") + op_name(f.op) + "()";
        snprintf(b, sizeof b, "at %s(mask 0x%08x)", op_name(f.op), f.mask);
        return std::string(b);
      };
      std::string d = desc(a);
      int e = l + 1;
      while (e < cnt && desc(c.fibers[lo + e]) == d) ++e;
      out += " lanes " + std::to_string(l) + (e - 1 > l ? "-" + std::to_string(e - 1) : "") + " " + d + ";";
      l = e;
    }
  }
  return out;
}

[[noreturn]] void deadlock(const std::string& why) {
  fatal("deadlock in %s: %s%s", where().c_str(), why.c_str(), describe_block().c_str());
}

// Resolves the collectives of warp w whose named lanes have all arrived. Returns whether any did.
bool resolve_warp(BlockCtx& c, int w) {
  const int lo = w * 32, cnt = std::min(32, c.n - lo);
  bool any = false;
  for (int l = 0; l < cnt; ++l) {
    Fiber& a = c.fibers[lo + l];
    if (a.state != kWaitWarp) continue;
    const unsigned m = a.mask;
    if (!((m >> l) & 1u)) {
      char b[160];
      snprintf(b, sizeof b, "warp %d lane %d calls %s with mask 0x%08x, which does not name the lane itself", w, l,
               op_name(a.op), m);
      deadlock(b);
    }
    bool ready = true;
    for (int j = 0; j < 32 && ready; ++j) {
      if (!((m >> j) & 1u)) continue;
      char b[200];
      if (j >= cnt) {
        snprintf(b, sizeof b, "warp %d lane %d: %s(mask 0x%08x) names lane %d, which the block does not have", w, l,
                 op_name(a.op), m, j);
        deadlock(b);
      }
      const Fiber& o = c.fibers[lo + j];
      if (o.state == kExited) {
        snprintf(b, sizeof b, "warp %d lane %d waits at %s(mask 0x%08x) for lane %d, which has exited: it can never complete",
                 w, l, op_name(a.op), m, j);
        deadlock(b);
      }
      ready = o.state == kWaitWarp && o.op == a.op && o.mask == m && o.width == a.width;
    }
    if (!ready) continue;
    uint64_t any_v = 0, all_v = 1, ballot = 0, radd = 0, rand_v = ~0ull, ror = 0, rxor = 0;
    int64_t rmin = INT64_MAX, rmax = INT64_MIN;
    bool all_equal = true;
    for (int j = 0; j < 32; ++j) {
      if (!((m >> j) & 1u)) continue;
      const Fiber& o = c.fibers[lo + j];
      const uint64_t v = o.val;
      any_v |= v != 0;
      all_v &= v != 0;
      if (v) ballot |= 1ull << j;
      all_equal &= v == a.val;
      const uint32_t u = (uint32_t)v;
      const int64_t s = (a.flags & 1) ? (int64_t)(int32_t)u : (int64_t)u;
      radd += u;
      rmin = std::min(rmin, s);
      rmax = std::max(rmax, s);
      rand_v &= u;
      ror |= u;
      rxor ^= u;
    }
    const int seg = (32 - a.width) & 31;  // PTX shfl: c[12:8] = 32 - width
    for (int j = 0; j < 32; ++j) {
      if (!((m >> j) & 1u)) continue;
      Fiber& o = c.fibers[lo + j];
      switch (a.op) {
        case kShflIdx:
        case kShflUp:
        case kShflDown:
        case kShflXor: {
          if (a.width < 1 || a.width > 32 || (a.width & (a.width - 1))) {
            char b[128];
            snprintf(b, sizeof b, "%s with width %d (must be a power of two <= 32)", op_name(a.op), a.width);
            deadlock(b);
          }
          const int min_lane = j & seg, max_lane = (j & seg) | (31 & ~seg);
          int src = j;
          bool valid = true;
          if (a.op == kShflIdx) src = min_lane | (o.arg & 31 & ~seg);
          if (a.op == kShflUp) src = j - o.arg, valid = src >= min_lane;
          if (a.op == kShflDown) src = j + o.arg, valid = src <= max_lane;
          if (a.op == kShflXor) src = j ^ o.arg, valid = src >= 0 && src <= max_lane;
          if (!valid) src = j;
          if (!((m >> src) & 1u)) {
            char b[200];
            snprintf(b, sizeof b, "warp %d lane %d: %s(mask 0x%08x) reads lane %d, which is not in the mask", w, j,
                     op_name(a.op), m, src);
            deadlock(b);
          }
          o.res = c.fibers[lo + src].val;
          break;
        }
        case kVoteAny: o.res = any_v; break;
        case kVoteAll: o.res = all_v; break;
        case kBallot: o.res = ballot; break;
        case kMatchAny: {
          uint64_t r = 0;
          for (int q = 0; q < 32; ++q)
            if (((m >> q) & 1u) && c.fibers[lo + q].val == o.val) r |= 1ull << q;
          o.res = r;
          break;
        }
        case kMatchAll:
          o.res = all_equal ? m : 0;
          o.aux = all_equal;
          break;
        case kReduceAdd: o.res = (uint32_t)radd; break;
        case kReduceMin: o.res = (uint32_t)rmin; break;
        case kReduceMax: o.res = (uint32_t)rmax; break;
        case kReduceAnd: o.res = (uint32_t)rand_v; break;
        case kReduceOr: o.res = (uint32_t)ror; break;
        case kReduceXor: o.res = (uint32_t)rxor; break;
        default: o.res = 0;
      }
      o.state = kRunnable;
    }
    any = true;
  }
  return any;
}

bool resolve_barrier(BlockCtx& c) {
  int live = 0, at = 0, op = -1, count = 0;
  for (int i = 0; i < c.n; ++i) {
    const Fiber& f = c.fibers[i];
    if (f.state == kExited) continue;
    ++live;
    if (f.state != kWaitBar) continue;
    ++at;
    if (op < 0) op = f.op;
    if (op != f.op) deadlock("threads wait at different kinds of block barrier");
    count += f.val != 0;
  }
  if (live == 0 || at != live) return false;
  const int r = op == kBarOr ? count > 0 : op == kBarAnd ? count == live : op == kBarCount ? count : 0;
  for (int i = 0; i < c.n; ++i)
    if (c.fibers[i].state == kWaitBar) {
      c.fibers[i].res = (uint64_t)r;
      c.fibers[i].state = kRunnable;
    }
  return true;
}

std::vector<Fiber>& fiber_pool() {
  static std::vector<Fiber>* p = new std::vector<Fiber>();
  return *p;
}

void run_block(BlockCtx& c, std::mt19937_64& rng) {
  const uint3 bd = blockDim;
  std::vector<Fiber>& fibers = fiber_pool();
  if ((int)fibers.size() < c.n) fibers.resize(c.n);
  c.fibers = fibers.data();
  c.exited = 0;
  for (int i = 0; i < c.n; ++i) {
    Fiber& f = fibers[i];
    f.index = i;
    f.lane = i & 31;
    f.warp = i >> 5;
    f.tid = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    f.state = kRunnable;
    fiber_init(f);
  }
  std::vector<int> order;
  order.reserve(c.n);
  const Order ord = config().order;
  for (;;) {
    bool progressed = false;
    order.clear();
    for (int i = 0; i < c.n; ++i)
      if (fibers[i].state == kRunnable) order.push_back(i);
    if (ord == kReverse) std::reverse(order.begin(), order.end());
    if (ord == kRandom) std::shuffle(order.begin(), order.end(), rng);
    for (int i : order) {
      resume(fibers[i]);
      progressed = true;
    }
    for (int w = 0; w * 32 < c.n; ++w) progressed |= resolve_warp(c, w);
    progressed |= resolve_barrier(c);
    if (c.exited == c.n) return;
    if (!progressed) deadlock("no thread can proceed");
  }
}

// ------------------------------------------------------------------------------------ faults
thread_local const Launch* tl_running = nullptr;

void on_fault(int sig, siginfo_t* si, void*);

void install_fault_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, nullptr);
    sigaction(SIGBUS, &sa, nullptr);
  });
  static thread_local bool alt = false;
  if (!alt) {
    stack_t ss;
    ss.ss_size = 1 << 16;
    ss.ss_sp = malloc(ss.ss_size);
    ss.ss_flags = 0;
    sigaltstack(&ss, nullptr);
    alt = true;
  }
}

// ------------------------------------------------------------------------------------ memory
struct Alloc {
  char* map;
  size_t map_bytes;
  uintptr_t base;
  size_t size;
  bool pinned;
  bool freed;
};

std::mutex& alloc_mu() {
  static std::mutex* m = new std::mutex();
  return *m;
}
std::map<uintptr_t, Alloc>& allocs() {
  static std::map<uintptr_t, Alloc>* m = new std::map<uintptr_t, Alloc>();
  return *m;
}
size_t g_live_device_bytes = 0;

// The allocation (live or freed) whose mapping contains p, or null. Caller holds alloc_mu().
const Alloc* find_alloc(const void* p) {
  auto& m = allocs();
  auto it = m.upper_bound((uintptr_t)p);
  if (it == m.begin()) return nullptr;
  --it;
  const Alloc& a = it->second;
  const uintptr_t u = (uintptr_t)p;
  return u >= (uintptr_t)a.map && u < (uintptr_t)a.map + a.map_bytes ? &a : nullptr;
}

void on_fault(int sig, siginfo_t* si, void*) {
  char what[256] = "an address outside any device allocation";
  {
    const Alloc* a = find_alloc(si->si_addr);  // no lock: the process is about to end
    const uintptr_t u = (uintptr_t)si->si_addr;
    if (a && a->freed)
      snprintf(what, sizeof what, "freed %s allocation of %zu bytes at %p (+%lld): use after free",
               a->pinned ? "pinned" : "device", a->size, (void*)a->base, (long long)(u - a->base));
    else if (a)
      snprintf(what, sizeof what, "%lld bytes past the end of the %zu-byte allocation at %p",
               (long long)(u - a->base - a->size), a->size, (void*)a->base);
    else if (tl_ctx && tl_ctx->dyn_smem && u >= (uintptr_t)tl_ctx->dyn_smem &&
             u < (uintptr_t)tl_ctx->dyn_smem + (1 << 20))
      snprintf(what, sizeof what, "past the end of the block's dynamic shared memory (%zu bytes)",
               tl_ctx->launch->smem);
  }
  if (tl_running) {
    char thr[64] = "";
    if (tl_fiber)
      snprintf(thr, sizeof thr, ", thread (%u,%u,%u)", tl_fiber->tid.x, tl_fiber->tid.y, tl_fiber->tid.z);
    fprintf(stderr, "SIMT FAILURE: %s at %p in %s%s: %s\n", sig == SIGSEGV ? "invalid access" : "bus error",
            si->si_addr, where().c_str(), thr, what);
  } else {
    fprintf(stderr, "SIMT FAILURE: %s at %p on the host (%s)\n", sig == SIGSEGV ? "segmentation fault" : "bus error",
            si->si_addr, what);
  }
  fflush(stderr);
  _exit(kExitFailure);
}

// ------------------------------------------------------------------------------------ grids
void* g_smem_arena = nullptr;
size_t g_smem_arena_bytes = 0;
constexpr size_t kMaxDynSmem = 227 << 10;

std::mutex& attr_mu() {
  static std::mutex* m = new std::mutex();
  return *m;
}
std::map<const void*, int>& max_dyn_smem() {
  static std::map<const void*, int>* m = new std::map<const void*, int>();
  return *m;
}

void run_grid(const Launch& L) {
  install_fault_handler();
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (!g_smem_arena) {
    g_smem_arena_bytes = (kMaxDynSmem + page - 1) / page * page;
    char* m = static_cast<char*>(
        mmap(nullptr, g_smem_arena_bytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (m == MAP_FAILED) fatal("cannot map shared memory");
    mprotect(m + g_smem_arena_bytes, page, PROT_NONE);  // guard: dynamic shared memory ends at it
    g_smem_arena = m;
  }
  const size_t dyn = (L.smem + 15) & ~(size_t)15;
  BlockCtx c;
  c.launch = &L;
  c.n = (int)(L.block.x * L.block.y * L.block.z);
  c.dyn_smem = static_cast<char*>(g_smem_arena) + g_smem_arena_bytes - dyn;
  tl_ctx = &c;
  tl_running = &L;
  blockDim = L.block;
  gridDim = L.grid;
  const uint64_t nblocks = (uint64_t)L.grid.x * L.grid.y * L.grid.z;
  std::vector<uint64_t> blocks(nblocks);
  for (uint64_t b = 0; b < nblocks; ++b) blocks[b] = b;
  static std::mt19937_64 rng(config().seed);  // one stream of choices per process: runs are repeatable
  if (config().order == kReverse) std::reverse(blocks.begin(), blocks.end());
  if (config().order == kRandom) std::shuffle(blocks.begin(), blocks.end(), rng);
  for (uint64_t b : blocks) {
    blockIdx = uint3{(unsigned)(b % L.grid.x), (unsigned)(b / L.grid.x % L.grid.y),
                         (unsigned)(b / ((uint64_t)L.grid.x * L.grid.y))};
    memset(c.dyn_smem, 0xff, dyn);  // uninitialised shared memory reads as NaN / -1
    run_block(c, rng);
  }
  tl_ctx = nullptr;
  tl_running = nullptr;
  ++g_launches;
}

// ------------------------------------------------------------------------------------ errors
thread_local cudaError_t tl_last = cudaSuccess;

cudaError_t ret(cudaError_t e) {
  if (e != cudaSuccess) tl_last = e;
  return e;
}

// ------------------------------------------------------------------------------------ device queues
struct Done {
  bool done = false;
  std::chrono::steady_clock::time_point when;
};
using DoneP = std::shared_ptr<Done>;

struct Work {
  std::function<void()> fn;
  std::vector<DoneP> deps;
  DoneP done = std::make_shared<Done>();
  std::shared_ptr<void> keep;  // resources alive until the op ran (a graph exec's nodes)
};

struct Node {
  std::function<void()> fn;
  CUevent_st* external_wait = nullptr;
};

}  // namespace
}  // namespace simt

using simt::DoneP;

struct CUuserObject_st {
  std::atomic<long> refs;
  void* ptr;
  cudaHostFn_t destroy;
};

namespace simt {
namespace {
void release_user_object(CUuserObject_st* o, long n);

struct GraphData {
  std::vector<Node> nodes;
  std::vector<std::pair<CUuserObject_st*, unsigned>> objects;
  ~GraphData() {
    for (auto& o : objects) release_user_object(o.first, o.second);
  }
};

struct Capture;
}  // namespace
}  // namespace simt

struct CUstream_st {
  size_t index = 0;
  bool blocking = true;
  bool live = true;
  std::deque<std::unique_ptr<simt::Work>> q;
  DoneP tail;
  simt::Capture* cap = nullptr;
  uint64_t cap_ops = 0, cap_joined = 0;
};

struct CUevent_st {
  unsigned flags = 0;
  bool live = true;
  DoneP rec;
  simt::Capture* cap = nullptr;  // recorded in this (ongoing) capture
  CUstream_st* cap_stream = nullptr;
  uint64_t cap_seq = 0;
};

struct CUgraph_st {
  std::shared_ptr<simt::GraphData> data = std::make_shared<simt::GraphData>();
  bool live = true;
};

struct CUgraphExec_st {
  std::shared_ptr<simt::GraphData> data;
  DoneP last;
  bool live = true;
};

namespace simt {
namespace {

struct Capture {
  unsigned long long id;
  CUstream_st* origin;
  cudaStreamCaptureMode mode;
  std::thread::id owner;
  bool invalid = false;
  CUgraph_st* graph;
  std::vector<CUstream_st*> members;
};

std::mutex g_mu;  // queues, streams, events, captures
std::condition_variable g_cv;
bool g_executing = false;
size_t g_cursor = 0;
unsigned long long g_capture_ids = 0;
std::vector<Capture*> g_captures;
thread_local cudaStreamCaptureMode tl_capture_mode = cudaStreamCaptureModeGlobal;

std::vector<CUstream_st*>& streams() {  // every stream ever created, destroyed ones included
  static std::vector<CUstream_st*>* v = [] {
    auto* s = new std::vector<CUstream_st*>();
    s->push_back(new CUstream_st());  // index 0: the legacy default stream
    return s;
  }();
  return *v;
}
CUstream_st* legacy() { return streams()[0]; }

thread_local CUstream_st* tl_per_thread = nullptr;

cudaError_t resolve(cudaStream_t h, CUstream_st** out) {
  if (h == nullptr || h == cudaStreamLegacy) {
    *out = legacy();
    return cudaSuccess;
  }
  if (h == cudaStreamPerThread) {
    if (!tl_per_thread) {
      tl_per_thread = new CUstream_st();
      tl_per_thread->index = streams().size();
      streams().push_back(tl_per_thread);
    }
    *out = tl_per_thread;
    return cudaSuccess;
  }
  for (CUstream_st* s : streams())
    if (s == h) {
      if (!s->live) return cudaErrorInvalidResourceHandle;
      *out = s;
      return cudaSuccess;
    }
  return cudaErrorInvalidResourceHandle;
}

void invalidate(Capture* c) { c->invalid = true; }

bool capturing_blocking_stream() {
  for (Capture* c : g_captures)
    for (CUstream_st* s : c->members)
      if (s->blocking) return true;
  return false;
}

// Appends an operation to a stream (caller holds g_mu). During capture it becomes a graph node.
cudaError_t enqueue(CUstream_st* s, std::function<void()> fn, std::vector<DoneP> deps = {},
                    std::shared_ptr<void> keep = nullptr, CUevent_st* external_wait = nullptr) {
  if (s->cap) {
    if (s->cap->invalid) return cudaErrorStreamCaptureInvalidated;
    s->cap->graph->data->nodes.push_back(Node{std::move(fn), external_wait});
    ++s->cap_ops;
    return cudaSuccess;
  }
  if (s == legacy()) {
    if (capturing_blocking_stream()) {
      for (Capture* c : g_captures) invalidate(c);
      return cudaErrorStreamCaptureImplicit;
    }
    for (CUstream_st* o : streams())
      if (o != s && o->blocking && o->tail && !o->tail->done) deps.push_back(o->tail);
  } else if (s->blocking && legacy()->tail && !legacy()->tail->done) {
    deps.push_back(legacy()->tail);
  }
  auto op = std::make_unique<Work>();
  op->fn = std::move(fn);
  op->deps = std::move(deps);
  op->keep = std::move(keep);
  s->tail = op->done;
  s->q.push_back(std::move(op));
  return cudaSuccess;
}

bool ready(const CUstream_st* s) {
  if (s->q.empty()) return false;
  for (const DoneP& d : s->q.front()->deps)
    if (!d->done) return false;
  return true;
}

// Next stream to run an operation of, by the order (caller holds g_mu).
CUstream_st* pick() {
  auto& all = streams();
  const size_t n = all.size();
  if (config().order == kRandom) {
    static std::mt19937_64 rng(config().seed * 7919 + 1);
    std::vector<CUstream_st*> c;
    for (CUstream_st* s : all)
      if (ready(s)) c.push_back(s);
    return c.empty() ? nullptr : c[rng() % c.size()];
  }
  for (size_t step = 1; step <= n; ++step) {
    const size_t i = config().order == kForward ? (g_cursor + step) % n : (g_cursor + n - step % n) % n;
    if (ready(all[i])) {
      g_cursor = i;
      return all[i];
    }
  }
  return nullptr;
}

bool idle() {
  if (g_executing) return false;
  for (CUstream_st* s : streams())
    if (!s->q.empty()) return false;
  return true;
}

// Runs one operation (caller holds `lk`, no other executor). Returns false when none is ready.
bool run_one(std::unique_lock<std::mutex>& lk) {
  CUstream_st* s = pick();
  if (!s) return false;
  std::unique_ptr<Work> op = std::move(s->q.front());
  s->q.pop_front();
  g_executing = true;
  lk.unlock();
  op->fn();
  op->done->when = std::chrono::steady_clock::now();
  lk.lock();
  op->done->done = true;
  g_executing = false;
  op.reset();
  g_cv.notify_all();
  return true;
}

template <class Pred>
void progress(Pred pred, const char* what) {
  std::unique_lock<std::mutex> lk(g_mu);
  while (!pred()) {
    if (g_executing) {
      g_cv.wait(lk);
      continue;
    }
    if (!run_one(lk) && !pred()) fatal("%s can never complete: no queued operation is ready", what);
  }
}

void wait_done(const DoneP& d, const char* what) {
  if (d) progress([&] { return d->done; }, what);
}

// A call that may synchronise, made while a capture forbids it (docs: cudaStreamCaptureModeGlobal).
cudaError_t capture_guard() {
  std::lock_guard<std::mutex> lk(g_mu);
  bool hit = false;
  for (Capture* c : g_captures) {
    const bool own = c->owner == std::this_thread::get_id() && c->mode != cudaStreamCaptureModeRelaxed;
    const bool global = c->mode == cudaStreamCaptureModeGlobal && tl_capture_mode != cudaStreamCaptureModeRelaxed;
    if (own || global) {
      invalidate(c);
      hit = true;
    }
  }
  return hit ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
// A call that may synchronise: fails (and invalidates the capture) where capture_guard says so, else runs.
template <class F>
cudaError_t guarded(F&& call) {
  const cudaError_t e = capture_guard();
  return ret(e != cudaSuccess ? e : call());
}

// ------------------------------------------------------------------------------------ user objects
struct Callbacks {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<CUuserObject_st*> q;
};

Callbacks& callbacks() {
  static Callbacks* c = [] {
    auto* k = new Callbacks();
    std::thread([k] {
      for (;;) {
        std::unique_lock<std::mutex> lk(k->mu);
        k->cv.wait(lk, [k] { return !k->q.empty(); });
        CUuserObject_st* o = k->q.front();
        k->q.pop_front();
        lk.unlock();
        o->destroy(o->ptr);  // on an internal thread, as the runtime does: no CUDA calls allowed there
        delete o;
      }
    }).detach();
    return k;
  }();
  return *c;
}

void release_user_object(CUuserObject_st* o, long n) {
  if (o->refs.fetch_sub(n) != n) return;
  Callbacks& c = callbacks();
  std::lock_guard<std::mutex> lk(c.mu);
  c.q.push_back(o);
  c.cv.notify_one();
}

// ------------------------------------------------------------------------------------ memory helpers
enum Space { kHost, kDevice, kInvalid };

// Where [p, p + n) lies: inside one live device allocation, host memory (pageable or pinned), or
// partly/fully in a device allocation it overruns or that was freed.
Space space_of(const void* p, size_t n, bool* pinned = nullptr) {
  std::lock_guard<std::mutex> lk(alloc_mu());
  const Alloc* a = find_alloc(p);
  if (pinned) *pinned = a && a->pinned && !a->freed;
  if (!a) return kHost;
  if (a->freed) return kInvalid;
  const uintptr_t u = (uintptr_t)p;
  if (u < a->base || u + n > a->base + a->size) return kInvalid;
  return a->pinned ? kHost : kDevice;
}

cudaError_t check_copy(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaMemcpyKind* actual,
                       bool* pinned_host) {
  bool dst_pinned = false, src_pinned = false;
  const Space ds = space_of(dst, n, &dst_pinned), ss = space_of(src, n, &src_pinned);
  if (ds == kInvalid || ss == kInvalid) return cudaErrorInvalidValue;
  *actual = ss == kHost ? (ds == kHost ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice)
                        : (ds == kHost ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
  if (kind != cudaMemcpyDefault && kind != *actual) return cudaErrorInvalidMemcpyDirection;
  *pinned_host = *actual == cudaMemcpyHostToDevice ? src_pinned : *actual == cudaMemcpyDeviceToHost && dst_pinned;
  return cudaSuccess;
}

cudaError_t map_alloc(void** p, size_t bytes, bool pinned) {
  if (!p) return cudaErrorInvalidValue;
  *p = nullptr;
  if (bytes == 0) return cudaSuccess;
  const size_t page = (size_t)sysconf(_SC_PAGESIZE);
  const size_t user = (bytes + 255) & ~(size_t)255;
  const size_t rw = (user + page - 1) / page * page;
  std::lock_guard<std::mutex> lk(alloc_mu());
  if (!pinned && g_live_device_bytes + bytes > config().mem_limit.load()) return cudaErrorMemoryAllocation;
  char* m = static_cast<char*>(mmap(nullptr, rw + page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
  if (m == MAP_FAILED) return cudaErrorMemoryAllocation;
  mprotect(m, rw, PROT_READ | PROT_WRITE);
  const uintptr_t base = (uintptr_t)m + rw - user;  // ends (256-aligned) at the guard page
  memset(reinterpret_cast<void*>(base), 0xff, user);  // uninitialised device memory reads as NaN / -1
  allocs()[(uintptr_t)m] = Alloc{m, rw + page, base, bytes, pinned, false};
  if (!pinned) g_live_device_bytes += bytes;
  *p = reinterpret_cast<void*>(base);
  return cudaSuccess;
}

cudaError_t unmap_alloc(void* p, bool pinned) {
  if (!p) return cudaSuccess;
  std::lock_guard<std::mutex> lk(alloc_mu());
  const Alloc* c = find_alloc(p);
  if (!c || c->freed || c->base != (uintptr_t)p || c->pinned != pinned) return cudaErrorInvalidValue;
  Alloc& a = allocs()[(uintptr_t)c->map];
  // Keep the range reserved and inaccessible: a later access faults as a use after free.
  mprotect(a.map, a.map_bytes, PROT_NONE);
  madvise(a.map, a.map_bytes, MADV_DONTNEED);
  a.freed = true;
  if (!pinned) g_live_device_bytes -= a.size;
  return cudaSuccess;
}

// Host-side behaviour as documented ("API synchronization behavior"): a pageable source is staged
// before the call returns (cudaMemcpy first waits for the stream), but the copy to the device may
// still be pending; a pageable destination is complete on return; device to device never waits;
// host to host is synchronous; pinned memory is asynchronous. Nothing waits while capturing.
cudaError_t memcpy_impl(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t stream, bool sync) {
  if (n == 0) return cudaSuccess;
  cudaMemcpyKind actual = cudaMemcpyDefault;
  bool pinned = false;
  cudaError_t e = check_copy(dst, src, n, kind, &actual, &pinned);
  if (e != cudaSuccess) return e;
  DoneP done, before;
  if (sync && actual == cudaMemcpyHostToDevice && !pinned) {
    {
      std::lock_guard<std::mutex> lk(g_mu);
      CUstream_st* s = nullptr;
      if ((e = resolve(stream, &s)) != cudaSuccess) return e;
      before = s->tail;
    }
    wait_done(before, "cudaMemcpy");
  }
  {
    std::lock_guard<std::mutex> lk(g_mu);
    CUstream_st* s = nullptr;
    if ((e = resolve(stream, &s)) != cudaSuccess) return e;
    const bool capturing = s->cap != nullptr;
    if (actual == cudaMemcpyHostToDevice && !pinned && !capturing) {
      auto copy = std::make_shared<std::vector<char>>(static_cast<const char*>(src), static_cast<const char*>(src) + n);
      e = enqueue(s, [dst, copy] { memcpy(dst, copy->data(), copy->size()); });
    } else {
      e = enqueue(s, [dst, src, n] { memmove(dst, src, n); });
    }
    if (e != cudaSuccess) return e;
    // A pageable source was staged above: the DMA itself may still be pending when this returns.
    const bool staged = actual == cudaMemcpyHostToDevice && !pinned;
    const bool wait = sync ? actual != cudaMemcpyDeviceToDevice && !staged
                           : actual == cudaMemcpyHostToHost || (actual == cudaMemcpyDeviceToHost && !pinned);
    if (wait && !capturing) done = s->tail;
  }
  wait_done(done, "cudaMemcpy");
  return cudaSuccess;
}

cudaError_t memset_impl(void* p, int v, size_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (space_of(p, n) != kDevice) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(stream, &s);
  if (e != cudaSuccess) return e;
  return enqueue(s, [p, v, n] { memset(p, v, n); });
}

}  // namespace

// ------------------------------------------------------------------------------------ kernel-side entry points
uint64_t warp_collective(int op, unsigned mask, uint64_t value, int arg, int width, int flags, int* aux) {
  Fiber* me = tl_fiber;
  if (!me) fatal("%s called outside a kernel", op_name(op));
  me->state = kWaitWarp;
  me->op = op;
  me->mask = mask;
  me->val = value;
  me->arg = arg;
  me->width = width;
  me->flags = flags;
  yield(me);
  if (aux) *aux = me->aux;
  return me->res;
}

int block_barrier(int op, int predicate) {
  Fiber* me = tl_fiber;
  if (!me) fatal("%s called outside a kernel", op_name(op));
  me->state = kWaitBar;
  me->op = op;
  me->val = predicate != 0;
  yield(me);
  return (int)me->res;
}

unsigned active_mask() {
  Fiber* me = tl_fiber;
  if (!me) fatal("__activemask called outside a kernel");
  unsigned m = 0;
  const int lo = me->warp * 32;
  for (int l = 0; l < 32 && lo + l < tl_ctx->n; ++l)
    if (tl_ctx->fibers[lo + l].state != kExited) m |= 1u << l;
  return m;
}

void* dynamic_shared() {
  if (!tl_ctx) fatal("dynamic shared memory used outside a kernel");
  return tl_ctx->dyn_smem;
}

void trap(const char* why) { fatal("%s in %s", why, where().c_str()); }

const char* order_name() { return config().order_name.c_str(); }
int sm_count() { return config().sms; }
void set_device_memory_limit(size_t bytes) { config().mem_limit = bytes; }
unsigned long long launches() { return g_launches.load(); }

cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream, KernelBody body) {
  const uint64_t threads = (uint64_t)block.x * block.y * block.z;
  if (!block.x || !block.y || !block.z || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      !grid.x || !grid.y || !grid.z || grid.y > 65535 || grid.z > 65535 || grid.x > 0x7fffffffu)
    return ret(cudaErrorInvalidConfiguration);
  size_t limit = 48 << 10;
  {
    std::lock_guard<std::mutex> lk(attr_mu());
    auto it = max_dyn_smem().find(kernel);
    if (it != max_dyn_smem().end()) limit = (size_t)it->second;
  }
  if (smem > limit) return ret(cudaErrorInvalidValue);
  auto L = std::make_shared<Launch>(Launch{kernel, grid, block, smem, std::move(body)});
  std::lock_guard<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(stream, &s);
  if (e != cudaSuccess) return ret(e);
  return ret(enqueue(s, [L] { run_grid(*L); }));
}

}  // namespace simt

using namespace simt;

// ------------------------------------------------------------------------------------ runtime API
long long clock64() { return (long long)std::chrono::steady_clock::now().time_since_epoch().count(); }

#define SIMT_ROUNDED(NAME, EXPR, MODE)    \
  float NAME(float a, float b) {          \
    const int old = fegetround();         \
    fesetround(MODE);                     \
    volatile float r = (EXPR);            \
    fesetround(old);                      \
    return r;                             \
  }
SIMT_ROUNDED(__fadd_rz, a + b, FE_TOWARDZERO)
SIMT_ROUNDED(__fmul_rz, a* b, FE_TOWARDZERO)
SIMT_ROUNDED(__fdiv_rz, a / b, FE_TOWARDZERO)
SIMT_ROUNDED(__fadd_ru, a + b, FE_UPWARD)
SIMT_ROUNDED(__fadd_rd, a + b, FE_DOWNWARD)
SIMT_ROUNDED(__fmul_ru, a* b, FE_UPWARD)
SIMT_ROUNDED(__fmul_rd, a* b, FE_DOWNWARD)
#undef SIMT_ROUNDED

cudaError_t cudaGetLastError() {
  cudaError_t e = tl_last;
  tl_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return tl_last; }

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define N(x) \
  case x:    \
    return #x;
    N(cudaSuccess) N(cudaErrorInvalidValue) N(cudaErrorMemoryAllocation) N(cudaErrorInitializationError)
    N(cudaErrorInvalidConfiguration) N(cudaErrorInvalidDevicePointer) N(cudaErrorInvalidMemcpyDirection)
    N(cudaErrorInsufficientDriver) N(cudaErrorNoDevice) N(cudaErrorInvalidDevice) N(cudaErrorNoKernelImageForDevice)
    N(cudaErrorInvalidResourceHandle) N(cudaErrorIllegalState) N(cudaErrorNotReady) N(cudaErrorIllegalAddress)
    N(cudaErrorLaunchOutOfResources) N(cudaErrorLaunchFailure) N(cudaErrorNotSupported)
    N(cudaErrorStreamCaptureUnsupported) N(cudaErrorStreamCaptureInvalidated) N(cudaErrorStreamCaptureMerge)
    N(cudaErrorStreamCaptureUnmatched) N(cudaErrorStreamCaptureUnjoined) N(cudaErrorStreamCaptureIsolation)
    N(cudaErrorStreamCaptureImplicit) N(cudaErrorCapturedEvent) N(cudaErrorStreamCaptureWrongThread)
    N(cudaErrorUnknown)
#undef N
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalState: return "the operation cannot be performed in the present state";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureMerge: return "operation would result in a merge of separate capture sequences";
    case cudaErrorStreamCaptureUnmatched: return "capture was not ended in the same stream as it began";
    case cudaErrorStreamCaptureUnjoined: return "capturing stream has unjoined work";
    case cudaErrorStreamCaptureIsolation: return "dependency created on uncaptured work in another stream";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorCapturedEvent: return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorStreamCaptureWrongThread: return "attempt to terminate a thread-local capture sequence from another thread";
    default: return cudaGetErrorName(e);
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return ret(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
thread_local int tl_device = 0;
cudaError_t cudaGetDevice(int* d) {
  if (!d) return ret(cudaErrorInvalidValue);
  *d = tl_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) {
  if (d != 0) return ret(cudaErrorInvalidDevice);
  tl_device = d;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int device) {
  if (!v || device != 0) return ret(device != 0 ? cudaErrorInvalidDevice : cudaErrorInvalidValue);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = 48 << 10; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrMultiProcessorCount: *v = config().sms; break;
    case cudaDevAttrL2CacheSize: *v = 50 << 20; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = (int)kMaxDynSmem; break;
    case cudaDevAttrMemoryPoolsSupported: *v = 0; break;
    default: return ret(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int device) {
  if (!p || device != 0) return ret(device != 0 ? cudaErrorInvalidDevice : cudaErrorInvalidValue);
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "SIMT host emulation (order %s)", config().order_name.c_str());
  p->totalGlobalMem = config().mem_limit;
  p->sharedMemPerBlock = 48 << 10;
  p->sharedMemPerBlockOptin = kMaxDynSmem;
  p->regsPerBlock = 65536;
  p->warpSize_ = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 0x7fffffff;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = config().sms;
  p->l2CacheSize = 50 << 20;
  p->memoryBusWidth = 5120;
  p->memoryClockRate = 2619000;
  p->clockRate = 1980000;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  if (!v) return ret(cudaErrorInvalidValue);
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) { return cudaDriverGetVersion(v); }
cudaError_t cudaMemGetInfo(size_t* f, size_t* t) {
  if (!f || !t) return ret(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(alloc_mu());
  *t = config().mem_limit;
  *f = *t > g_live_device_bytes ? *t - g_live_device_bytes : 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
  cudaError_t e = capture_guard();
  if (e != cudaSuccess) return ret(e);
  progress(idle, "cudaDeviceSynchronize");
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t bytes) {
  return guarded([&] { return map_alloc(p, bytes, false); });
}
cudaError_t cudaFree(void* p) {
  return guarded([&] { return unmap_alloc(p, false); });
}
cudaError_t cudaMallocHost(void** p, size_t bytes) {
  return guarded([&] { return map_alloc(p, bytes, true); });
}
cudaError_t cudaFreeHost(void* p) {
  return guarded([&] { return unmap_alloc(p, true); });
}
cudaError_t cudaMemset(void* p, int v, size_t n) {
  return guarded([&] { return memset_impl(p, v, n, nullptr); });
}
cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t s) { return ret(memset_impl(p, v, n, s)); }
cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind kind) {
  return guarded([&] { return memcpy_impl(dst, src, n, kind, nullptr, true); });
}
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t s) {
  return ret(memcpy_impl(dst, src, n, kind, s, false));
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* out, unsigned flags) {
  if (!out || (flags & ~1u)) return ret(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(g_mu);
  auto* s = new CUstream_st();
  s->blocking = !(flags & cudaStreamNonBlocking);
  s->index = streams().size();
  streams().push_back(s);
  *out = s;
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* out) { return cudaStreamCreateWithFlags(out, cudaStreamDefault); }

// The handle dies now; work already queued still runs (the runtime releases it afterwards).
cudaError_t cudaStreamDestroy(cudaStream_t h) {
  std::lock_guard<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(h, &s);
  if (e != cudaSuccess || s == legacy() || s == tl_per_thread) return ret(e ? e : cudaErrorInvalidResourceHandle);
  if (s->cap) return ret(cudaErrorStreamCaptureUnsupported);
  s->live = false;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t h) {
  DoneP tail;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    CUstream_st* s = nullptr;
    cudaError_t e = resolve(h, &s);
    if (e != cudaSuccess) return ret(e);
    if (s->cap) {
      invalidate(s->cap);
      return ret(cudaErrorStreamCaptureUnsupported);
    }
    tail = s->tail;
  }
  cudaError_t e = capture_guard();
  if (e != cudaSuccess) return ret(e);
  wait_done(tail, "cudaStreamSynchronize");
  return cudaSuccess;
}

cudaError_t cudaStreamQuery(cudaStream_t h) {
  std::unique_lock<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(h, &s);
  if (e != cudaSuccess) return ret(e);
  if (s->cap) {
    invalidate(s->cap);
    return ret(cudaErrorStreamCaptureUnsupported);
  }
  if (!g_executing) run_one(lk);  // a polling loop makes progress
  return s->tail && !s->tail->done ? cudaErrorNotReady : cudaSuccess;
}

cudaError_t cudaLaunchHostFunc(cudaStream_t h, cudaHostFn_t fn, void* data) {
  if (!fn) return ret(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(h, &s);
  if (e != cudaSuccess) return ret(e);
  return ret(enqueue(s, [fn, data] { fn(data); }));
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* out, unsigned flags) {
  if (!out || (flags & ~3u)) return ret(cudaErrorInvalidValue);
  auto* e = new CUevent_st();
  e->flags = flags;
  *out = e;
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* out) { return cudaEventCreateWithFlags(out, cudaEventDefault); }
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (!e || !e->live) return ret(cudaErrorInvalidResourceHandle);
  e->live = false;  // kept allocated: a later use is reported instead of reading freed memory
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t ev, cudaStream_t h) {
  if (!ev || !ev->live) return ret(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(h, &s);
  if (e != cudaSuccess) return ret(e);
  if (s->cap) {
    if (s->cap->invalid) return ret(cudaErrorStreamCaptureInvalidated);
    ev->cap = s->cap;
    ev->cap_stream = s;
    ev->cap_seq = s->cap_ops;
    ev->rec = nullptr;
    return cudaSuccess;
  }
  e = enqueue(s, [] {});
  if (e == cudaSuccess) {
    ev->rec = s->tail;
    ev->cap = nullptr;
  }
  return ret(e);
}

namespace {
bool captured_event(cudaEvent_t ev) {
  return ev->cap && std::find(g_captures.begin(), g_captures.end(), ev->cap) != g_captures.end();
}
}  // namespace

cudaError_t cudaEventQuery(cudaEvent_t ev) {
  if (!ev || !ev->live) return ret(cudaErrorInvalidResourceHandle);
  {
    std::unique_lock<std::mutex> lk(g_mu);
    if (captured_event(ev)) return ret(cudaErrorCapturedEvent);
  }
  cudaError_t e = capture_guard();
  if (e != cudaSuccess) return ret(e);
  std::unique_lock<std::mutex> lk(g_mu);
  if (ev->rec && !ev->rec->done && !g_executing) run_one(lk);
  return ev->rec && !ev->rec->done ? cudaErrorNotReady : cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t ev) {
  if (!ev || !ev->live) return ret(cudaErrorInvalidResourceHandle);
  DoneP rec;
  {
    std::lock_guard<std::mutex> lk(g_mu);
    if (captured_event(ev)) return ret(cudaErrorCapturedEvent);
    rec = ev->rec;
  }
  cudaError_t e = capture_guard();
  if (e != cudaSuccess) return ret(e);
  wait_done(rec, "cudaEventSynchronize");
  return cudaSuccess;
}

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  if (!ms || !a || !b || !a->live || !b->live) return ret(cudaErrorInvalidResourceHandle);
  if ((a->flags | b->flags) & cudaEventDisableTiming) return ret(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lk(g_mu);
  if (!a->rec || !b->rec) return ret(cudaErrorInvalidResourceHandle);
  if (!a->rec->done || !b->rec->done) return ret(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(b->rec->when - a->rec->when).count();
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t h, cudaEvent_t ev, unsigned flags) {
  if (!ev || !ev->live) return ret(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(h, &s);
  if (e != cudaSuccess) return ret(e);
  if (captured_event(ev)) {
    Capture* c = ev->cap;
    if (!s->cap) {  // fork: the stream joins the capture
      if (s == legacy()) return ret(cudaErrorStreamCaptureImplicit);
      s->cap = c;
      s->cap_ops = s->cap_joined = 0;
      c->members.push_back(s);
      return cudaSuccess;
    }
    if (s->cap != c) {
      invalidate(s->cap);
      invalidate(c);
      return ret(cudaErrorStreamCaptureMerge);
    }
    if (ev->cap_stream != s) ev->cap_stream->cap_joined = std::max(ev->cap_stream->cap_joined, ev->cap_seq);
    return cudaSuccess;
  }
  if (s->cap) {
    if (!(flags & cudaEventWaitExternal)) {
      invalidate(s->cap);
      return ret(cudaErrorStreamCaptureIsolation);
    }
    return ret(enqueue(s, [] {}, {}, nullptr, ev));
  }
  if (ev->rec && !ev->rec->done) return ret(enqueue(s, [] {}, {ev->rec}));
  return cudaSuccess;
}

cudaError_t cudaThreadExchangeStreamCaptureMode(cudaStreamCaptureMode* mode) {
  if (!mode) return ret(cudaErrorInvalidValue);
  std::swap(*mode, tl_capture_mode);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t h, cudaStreamCaptureMode mode) {
  std::lock_guard<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(h, &s);
  if (e != cudaSuccess) return ret(e);
  if (s == legacy()) return ret(cudaErrorStreamCaptureUnsupported);
  if (s->cap) return ret(cudaErrorIllegalState);
  auto* c = new Capture{++g_capture_ids, s, mode, std::this_thread::get_id(), false, new CUgraph_st(), {s}};
  s->cap = c;
  s->cap_ops = s->cap_joined = 0;
  g_captures.push_back(c);
  return cudaSuccess;
}

cudaError_t cudaStreamEndCapture(cudaStream_t h, cudaGraph_t* graph) {
  if (!graph) return ret(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(h, &s);
  if (e != cudaSuccess) return ret(e);
  Capture* c = s->cap;
  if (!c) return ret(cudaErrorIllegalState);
  if (c->origin != s) {
    invalidate(c);
    return ret(cudaErrorStreamCaptureUnmatched);
  }
  if (c->mode != cudaStreamCaptureModeRelaxed && c->owner != std::this_thread::get_id())
    return ret(cudaErrorStreamCaptureWrongThread);
  bool unjoined = false;
  for (CUstream_st* m : c->members) {
    if (m != s && m->cap_ops > m->cap_joined) unjoined = true;
    m->cap = nullptr;
    m->cap_ops = m->cap_joined = 0;
  }
  g_captures.erase(std::find(g_captures.begin(), g_captures.end(), c));
  *graph = nullptr;
  e = c->invalid ? cudaErrorStreamCaptureInvalidated : unjoined ? cudaErrorStreamCaptureUnjoined : cudaSuccess;
  if (e == cudaSuccess)
    *graph = c->graph;
  else
    delete c->graph;
  delete c;
  return ret(e);
}

cudaError_t cudaStreamIsCapturing(cudaStream_t h, cudaStreamCaptureStatus* status) {
  return cudaStreamGetCaptureInfo(h, status);
}

cudaError_t cudaStreamGetCaptureInfo(cudaStream_t h, cudaStreamCaptureStatus* status, unsigned long long* id,
                                     cudaGraph_t* graph, const cudaGraphNode_t** deps, size_t* num_deps) {
  if (!status) return ret(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(h, &s);
  if (e != cudaSuccess) return ret(e);
  if (s == legacy() && capturing_blocking_stream()) return ret(cudaErrorStreamCaptureImplicit);
  *status = !s->cap ? cudaStreamCaptureStatusNone
                    : s->cap->invalid ? cudaStreamCaptureStatusInvalidated : cudaStreamCaptureStatusActive;
  if (id && s->cap) *id = s->cap->id;
  if (graph) *graph = s->cap ? s->cap->graph : nullptr;
  if (deps) *deps = nullptr;
  if (num_deps) *num_deps = 0;
  return cudaSuccess;
}

cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t g, unsigned long long) {
  if (!exec || !g || !g->live) return ret(cudaErrorInvalidValue);
  auto* x = new CUgraphExec_st();
  x->data = std::make_shared<GraphData>();
  x->data->nodes = g->data->nodes;
  x->data->objects = g->data->objects;  // an executable graph holds its own references
  for (auto& o : x->data->objects) o.first->refs += o.second;
  *exec = x;
  return cudaSuccess;
}

// Launches of one executable graph run one after another, whatever their streams.
cudaError_t cudaGraphLaunch(cudaGraphExec_t x, cudaStream_t h) {
  if (!x || !x->live) return ret(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lk(g_mu);
  CUstream_st* s = nullptr;
  cudaError_t e = resolve(h, &s);
  if (e != cudaSuccess) return ret(e);
  if (s->cap) {  // a child graph of the capture
    for (const Node& n : x->data->nodes) {
      if ((e = enqueue(s, n.fn, {}, x->data, n.external_wait)) != cudaSuccess) return ret(e);
    }
    return cudaSuccess;
  }
  std::vector<DoneP> first;
  if (x->last && !x->last->done) first.push_back(x->last);
  if (x->data->nodes.empty()) {
    e = enqueue(s, [] {}, first, x->data);
  } else {
    for (size_t i = 0; i < x->data->nodes.size() && e == cudaSuccess; ++i) {
      const Node& n = x->data->nodes[i];
      std::vector<DoneP> deps = i == 0 ? first : std::vector<DoneP>();
      if (n.external_wait && n.external_wait->rec) deps.push_back(n.external_wait->rec);
      e = enqueue(s, n.fn, deps, x->data);
    }
  }
  if (e == cudaSuccess) x->last = s->tail;
  return ret(e);
}

cudaError_t cudaGraphExecDestroy(cudaGraphExec_t x) {
  if (!x || !x->live) return ret(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lk(g_mu);
  x->live = false;
  x->data.reset();  // queued launches keep the nodes (and the user objects) until they ran
  return cudaSuccess;
}

cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  if (!g || !g->live) return ret(cudaErrorInvalidResourceHandle);
  std::lock_guard<std::mutex> lk(g_mu);
  g->live = false;
  g->data.reset();
  return cudaSuccess;
}

cudaError_t cudaUserObjectCreate(cudaUserObject_t* out, void* ptr, cudaHostFn_t destroy, unsigned refs,
                                 unsigned flags) {
  if (!out || !destroy || refs == 0 || flags != cudaUserObjectNoDestructorSync) return ret(cudaErrorInvalidValue);
  auto* o = new CUuserObject_st();
  o->refs = refs;
  o->ptr = ptr;
  o->destroy = destroy;
  *out = o;
  return cudaSuccess;
}
cudaError_t cudaUserObjectRetain(cudaUserObject_t o, unsigned n) {
  if (!o || n == 0) return ret(cudaErrorInvalidValue);
  o->refs += n;
  return cudaSuccess;
}
cudaError_t cudaUserObjectRelease(cudaUserObject_t o, unsigned n) {
  if (!o || n == 0) return ret(cudaErrorInvalidValue);
  release_user_object(o, n);
  return cudaSuccess;
}
cudaError_t cudaGraphRetainUserObject(cudaGraph_t g, cudaUserObject_t o, unsigned n, unsigned flags) {
  if (!g || !o || n == 0) return ret(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(g_mu);
  if (!(flags & cudaGraphUserObjectMove)) o->refs += n;
  g->data->objects.emplace_back(o, n);
  return cudaSuccess;
}
cudaError_t cudaGraphReleaseUserObject(cudaGraph_t g, cudaUserObject_t o, unsigned n) {
  if (!g || !o || n == 0) return ret(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(g_mu);
  for (auto& e : g->data->objects)
    if (e.first == o && e.second >= n) {
      e.second -= n;
      release_user_object(o, n);
      return cudaSuccess;
    }
  return ret(cudaErrorInvalidValue);
}

cudaError_t simt_occupancy(int* blocks, const void* func, int block_size, size_t dyn_smem) {
  if (!blocks || !func || block_size <= 0 || block_size > 1024 || dyn_smem > kMaxDynSmem)
    return ret(cudaErrorInvalidValue);
  *blocks = std::min(2048 / block_size, 32);
  return cudaSuccess;
}

cudaError_t simt_func_set_attribute(const void* func, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || (size_t)value > kMaxDynSmem)
    return ret(cudaErrorInvalidValue);
  std::lock_guard<std::mutex> lk(attr_mu());
  max_dyn_smem()[func] = value;
  return cudaSuccess;
}
