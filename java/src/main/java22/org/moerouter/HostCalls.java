// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.invoke.MethodHandle;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Optional;
import org.bytedeco.javacpp.Loader;

/**
 * JDK 22+ version of {@code HostCalls} (multi-release jar; the JDK 17 version calls JNI only): the raw-address
 * host calls of {@link NativeRouter} go through JNI ({@link RouterNative}) or through FFM downcalls bound to the
 * C ABI of native/include/moe_router.h ({@code moe_route_host}, {@code moe_route_backward_host}) in the library
 * JavaCPP loaded.
 *
 * <p>The default is JNI: HostCallBenchmark (docs/benchmarks.md, JDK 25) found no difference between the two
 * beyond the noise, a few ns per call either way against 100+ ns of routing work for one token, so the
 * binding that behaves the same on every JDK stays. {@code -Dmoerouter.hostCalls=ffm} selects FFM; FFM
 * calls of at most {@code -Dmoerouter.hostCalls.criticalTokens} tokens (default 0: none) on CPU routers then
 * use a critical downcall (no thread-state transition, so a garbage collection waits for the call; it
 * measured no faster either). If FFM cannot be bound (native access denied, symbol missing) the calls stay
 * on JNI and {@link #binding()} says why.
 *
 * <p>Pointers are passed as {@code JAVA_LONG}: on the LP64 ABIs this library ships for (x86-64 System V),
 * a pointer and a 64-bit integer travel in the same registers, and no MemorySegment is built per call.
 */
final class HostCalls {
  private HostCalls() {}

  static final String DEFAULT = "jni";
  static final long DEFAULT_CRITICAL_TOKENS = 0;

  private static final MethodHandle ROUTE;
  private static final MethodHandle ROUTE_CRITICAL;
  private static final MethodHandle BACKWARD;
  private static final MethodHandle BACKWARD_CRITICAL;
  private static final long CRITICAL_TOKENS;
  private static final String BINDING;
  /** The C ABI reports non-finite rows through an out-parameter; one 8-byte slot per thread. */
  private static final ThreadLocal<MemorySegment> NONFINITE =
      ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(JAVA_LONG));

  static {
    MethodHandle route = null, routeCritical = null, backward = null, backwardCritical = null;
    String reason = null;
    String choice = System.getProperty("moerouter.hostCalls", DEFAULT).trim().toLowerCase(Locale.ROOT);
    long critical = Long.getLong("moerouter.hostCalls.criticalTokens", DEFAULT_CRITICAL_TOKENS);
    if (!choice.equals("ffm") && !choice.equals("jni")) {
      reason = "moerouter.hostCalls=" + choice + " is neither ffm nor jni";
    } else if (choice.equals("ffm")) {
      if (!RouterNative.available()) {
        reason = "the native library did not load";
      } else {
        try {
          SymbolLookup lib = library();
          Linker linker = Linker.nativeLinker();
          // moe_route_host(router, logits, dtype, tokens, replay_idx, replay_mask, out_idx, out_w,
          // out_nonfinite_flags, out_nonfinite_rows); moe_route_backward_host(router, logits, dtype, tokens,
          // idx, grad_w, nonfinite_flags, grad_logits)
          FunctionDescriptor routeFn = FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_LONG,
              JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG);
          FunctionDescriptor backwardFn = FunctionDescriptor.of(JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_LONG,
              JAVA_LONG, JAVA_LONG, JAVA_LONG, JAVA_LONG);
          MemorySegment r = find(lib, "moe_route_host"), b = find(lib, "moe_route_backward_host");
          route = linker.downcallHandle(r, routeFn);
          routeCritical = linker.downcallHandle(r, routeFn, Linker.Option.critical(false));
          backward = linker.downcallHandle(b, backwardFn);
          backwardCritical = linker.downcallHandle(b, backwardFn, Linker.Option.critical(false));
        } catch (Throwable t) {  // IllegalCallerException under --illegal-native-access=deny, and the like
          route = routeCritical = backward = backwardCritical = null;
          reason = "FFM binding failed: " + t;
        }
      }
    }
    ROUTE = route;
    ROUTE_CRITICAL = routeCritical;
    BACKWARD = backward;
    BACKWARD_CRITICAL = backwardCritical;
    CRITICAL_TOKENS = Math.max(0, critical);
    BINDING = route != null ? "FFM" : reason == null ? "JNI" : "JNI (FFM unavailable: " + reason + ")";
  }

  /** The library JavaCPP loaded: found by this class loader's lookup, else opened again by its path. */
  private static SymbolLookup library() {
    SymbolLookup loader = SymbolLookup.loaderLookup();
    if (loader.find("moe_route_host").isPresent()) return loader;
    String path = Loader.load(RouterNative.class);
    return SymbolLookup.libraryLookup(Path.of(path), Arena.global());
  }

  private static MemorySegment find(SymbolLookup lib, String name) {
    Optional<MemorySegment> s = lib.find(name);
    if (s.isEmpty()) throw new IllegalStateException(name + " is not exported by the native library");
    return s.get();
  }

  /** {@code cpu}: a CPU router, whose short calls may take the critical downcall (a CUDA call can wait on the device). */
  static long route(long handle, boolean cpu, long logits, int dtype, long tokens, long replayIdx, long replayMask,
      long outIdx, long outWeights, long outFlags) {
    if (ROUTE == null)
      return RouterNative.moe_jni_route_host(handle, logits, dtype, tokens, replayIdx, replayMask, outIdx, outWeights,
          outFlags);
    MemorySegment slot = NONFINITE.get();
    int st;
    try {
      st = cpu && tokens <= CRITICAL_TOKENS
          ? (int) ROUTE_CRITICAL.invokeExact(handle, logits, dtype, tokens, replayIdx, replayMask, outIdx, outWeights,
              outFlags, slot.address())
          : (int) ROUTE.invokeExact(handle, logits, dtype, tokens, replayIdx, replayMask, outIdx, outWeights,
              outFlags, slot.address());
    } catch (Throwable t) {  // a downcall throws nothing itself; invokeExact declares Throwable
      throw new AssertionError("moe_route_host downcall", t);
    }
    return st == 0 ? slot.get(JAVA_LONG, 0) : -st;
  }

  static int backward(long handle, boolean cpu, long logits, int dtype, long tokens, long idx, long gradWeights,
      long flags, long gradLogits) {
    if (BACKWARD == null)
      return RouterNative.moe_jni_backward_host(handle, logits, dtype, tokens, idx, gradWeights, flags, gradLogits);
    try {
      return cpu && tokens <= CRITICAL_TOKENS
          ? (int) BACKWARD_CRITICAL.invokeExact(handle, logits, dtype, tokens, idx, gradWeights, flags, gradLogits)
          : (int) BACKWARD.invokeExact(handle, logits, dtype, tokens, idx, gradWeights, flags, gradLogits);
    } catch (Throwable t) {
      throw new AssertionError("moe_route_backward_host downcall", t);
    }
  }

  /** "FFM", "JNI", or "JNI (FFM unavailable: why)". */
  static String binding() {
    return BINDING;
  }
}
