// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.ShortBuffer;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * Routes tokens to experts (docs/semantics.md sections 1-5) on one backend, with replay.
 *
 * <p>Logits are row-major [tokens, experts]: fp32 as {@code float[]}, bf16/fp16 as raw 16-bit values
 * in {@code short[]}. Outputs go into caller-provided [tokens, k] buffers (no allocation per call on
 * the native backends). Every call returns the number of rows in which a logit it read was NaN or
 * infinite (a live row reads its whole row, a replayed row its k logits, or the whole row for softmax
 * pre), and can write which rows those were ({@code outNonfiniteRows} [tokens], 1 or 0), which
 * {@link #backward} needs under {@link NonFinitePolicy#ZERO}. Replay calls take indices [tokens, k] (and
 * an optional mask [tokens]; rows with mask 0 are routed live); an invalid row (expert out of range, or
 * repeated; all -1 rows follow {@link RouterConfig#minusOneRows()}) is rejected with an error naming it,
 * before any output is written. Under {@link NonFinitePolicy#ERROR} a read NaN or infinity rejects the
 * call the same way ({@link Status#NONFINITE}).
 *
 * <pre>{@code
 * try (MoeRouter router = MoeRouter.create(config)) {          // CUDA, else native CPU, else Java
 *   long bad = router.route(logits, tokens, idx, weights);      // live; record idx
 *   router.replay(logits, tokens, idx, null, idx2, weights2);   // forced experts, live weights
 *   router.backward(logits, tokens, idx, gradWeights, gradLogits);
 * }
 * // non-finite policy ZERO: keep the forward's row flags for the backward
 * byte[] rows = new byte[tokens];
 * router.route(logits, tokens, idx, weights, rows);
 * router.backward(logits, tokens, idx, gradWeights, rows, gradLogits);
 * }</pre>
 *
 * <p>Memory forms: Java arrays (every backend), direct NIO buffers and raw host addresses (every backend;
 * the native ones use the memory in place, the Java one copies), device pointers on a CUDA stream
 * (the {@code *Device} methods and {@link #checkReplay()}: CUDA only), and on JDK 22+
 * {@code MemorySegment}s through {@code MoeSegments}. A CUDA router given host memory copies it to the
 * device and back within the call.
 *
 * <p>Errors: a broken rule is a {@link MoeRouterException} whose {@link Status} names it
 * ({@link Status#INVALID_ARGUMENT} for shapes, lengths and nulls, {@link Status#INVALID_REPLAY} for replay and
 * backward rows, {@link Status#NONFINITE} under ERROR), raised before any output is written (device calls
 * report row rejections through {@link #checkReplay()}); a call on a closed router throws
 * {@link IllegalStateException}. Each method lists its own.
 *
 * <p>Threads and lifetime: routers are safe to call from several threads at once (the Java backend
 * serialises the calls of one router; the native ones run them concurrently). The expert bias may change
 * ({@link #setExpertBias}, {@link #updateExpertBias}) while other threads route: each routing call ranks
 * all its rows with one bias version, the one current when it started, and every call that starts after
 * the change returned uses the new one. {@link #close()} is idempotent and may race with calls: calls already inside finish normally, the
 * native resources are freed when the last of them returns, and every call that starts after close throws
 * {@link IllegalStateException}.
 *
 * <p>Close native routers explicitly (try-with-resources). A CPU or CUDA router that is never closed is
 * freed by a {@link java.lang.ref.Cleaner} once the garbage collector finds it unreachable, but the
 * collector does not see native or device memory, so that can be late or, in a JVM with little heap
 * pressure, never before exit.
 *
 * <p>Traps: outputs must not overlap inputs (except {@code replayIdx} and {@code outIdx}, which may be the
 * same array); array calls on the native backends pin the arrays for the whole call, which can hold off
 * the garbage collector, on CUDA for the device round trip too (use direct buffers or device pointers for
 * large CUDA batches); the {@link RoutingResult} forms allocate per call.
 */
public abstract class MoeRouter implements AutoCloseable {
  final RouterConfig config;
  final Backend backend;

  MoeRouter(RouterConfig config, Backend backend) {
    this.config = Objects.requireNonNull(config, "config");
    this.backend = backend;
    this.expertBias = config.expertBias();
  }

  /**
   * A router on the fastest available backend, {@link Backend#AUTO}: CUDA, then native CPU, then pure Java.
   * The fallback to Java is logged once (System.Logger {@code "org.moerouter"}, WARNING) with the reason;
   * {@code -Dmoerouter.requireNative=true} ({@link #REQUIRE_NATIVE_PROPERTY}) makes it an error.
   *
   * @param config the validated configuration; the router keeps it (it is immutable)
   * @return a new open router; close it (try-with-resources)
   * @throws MoeRouterException {@link Status#UNSUPPORTED} when no native backend loaded and
   *     {@code moerouter.requireNative} is true; the status of a failed native creation (for example
   *     {@link Status#OUT_OF_MEMORY}, {@link Status#CUDA_ERROR})
   * @throws NullPointerException when config is null
   */
  public static MoeRouter create(RouterConfig config) {
    return create(config, Backend.AUTO);
  }

  /**
   * System property ({@value}) that turns AUTO's logged fallback to Java into a {@link MoeRouterException}
   * ({@link Status#UNSUPPORTED}); read at each {@link #create(RouterConfig)}.
   */
  public static final String REQUIRE_NATIVE_PROPERTY = "moerouter.requireNative";

  /**
   * A router on a named backend, or on the first available one for {@link Backend#AUTO} and
   * {@link Backend#NATIVE}.
   *
   * <pre>{@code
   * MoeRouter cpu = MoeRouter.create(config, Backend.CPU);      // throws if the JNI library did not load
   * MoeRouter any = MoeRouter.create(config, Backend.NATIVE);   // CUDA, else CPU, never Java
   * }</pre>
   *
   * @param config the validated configuration; the router keeps it (it is immutable)
   * @param backend {@link Backend#JAVA} always works; CPU and CUDA need the native library (CUDA also its
   *     kernels and a visible device: {@link #unavailableReason(Backend)} says which is missing)
   * @return a new open router; {@link #backend()} is the resolved backend (never AUTO or NATIVE)
   * @throws MoeRouterException {@link Status#UNSUPPORTED} naming the reason when the requested backend (or,
   *     for NATIVE, any native one) is unavailable, or AUTO would fall back to Java under
   *     {@code -Dmoerouter.requireNative=true}; the status of a failed native creation otherwise
   * @throws NullPointerException when config or backend is null
   */
  public static MoeRouter create(RouterConfig config, Backend backend) {
    Objects.requireNonNull(config, "config");
    switch (Objects.requireNonNull(backend, "backend")) {
      case JAVA:
        return new JavaRouter(config);
      case CPU:
      case CUDA: {
        String why = unavailableReason(backend);
        if (why != null) throw new MoeRouterException(Status.UNSUPPORTED, backend + " backend unavailable: " + why);
        return new NativeRouter(config, backend);
      }
      default: {
        for (Backend b : new Backend[] {Backend.CUDA, Backend.CPU})
          if (unavailableReason(b) == null) return new NativeRouter(config, b);
        String why = unavailableReason(Backend.CPU);
        if (backend == Backend.NATIVE)
          throw new MoeRouterException(Status.UNSUPPORTED, "NATIVE backend unavailable (neither CUDA nor CPU): " + why);
        if (Boolean.getBoolean(REQUIRE_NATIVE_PROPERTY))
          throw new MoeRouterException(Status.UNSUPPORTED, "no native backend (-D" + REQUIRE_NATIVE_PROPERTY
              + "=true forbids the Java fallback): " + why);
        if (FALLBACK_LOGGED.compareAndSet(false, true))
          System.getLogger("org.moerouter").log(System.Logger.Level.WARNING, "moe-router: no native backend ("
              + why + "); routing on the pure-Java backend, several times slower. Backend.NATIVE or -D"
              + REQUIRE_NATIVE_PROPERTY + "=true make this an error.");
        return new JavaRouter(config);
      }
    }
  }

  private static final AtomicBoolean FALLBACK_LOGGED = new AtomicBoolean();

  /**
   * The backend {@link Backend#AUTO} resolves to on this machine now (CUDA, then CPU, then JAVA).
   *
   * @return CUDA, CPU or JAVA; never AUTO or NATIVE
   */
  public static Backend defaultBackend() {
    if (unavailableReason(Backend.CUDA) == null) return Backend.CUDA;
    if (unavailableReason(Backend.CPU) == null) return Backend.CPU;
    return Backend.JAVA;
  }

  /**
   * Whether {@link #create(RouterConfig, Backend)} can make a router on this backend here.
   *
   * @param backend any backend; JAVA and AUTO are always available
   * @return true when {@link #unavailableReason(Backend)} is null
   */
  public static boolean isAvailable(Backend backend) {
    return unavailableReason(backend) == null;
  }

  /**
   * Why a backend cannot be used here: the native library failed to load (with the loader's error), the
   * library has no CUDA kernels (the CPU-only jar), or no CUDA device is visible.
   *
   * @param backend any backend; NATIVE is available when CPU is
   * @return null when the backend can be used, else a one-line reason
   */
  public static String unavailableReason(Backend backend) {
    if (backend == Backend.JAVA || backend == Backend.AUTO) return null;
    if (!RouterNative.available()) return "native library failed to load: " + RouterNative.loadFailure();
    if (backend == Backend.CPU || backend == Backend.NATIVE) return null;
    if (RouterNative.moe_cuda_compiled() == 0)
      return "the native library has no CUDA kernels (the linux-x86_64 jar, or a build without nvcc; the"
          + " linux-x86_64-cuda jar has them)";
    if (RouterNative.moe_cuda_device_count() <= 0) return "no CUDA device is visible";
    return null;
  }

  /**
   * Threads per large CPU-backend call, the caller's included. The CPU backend runs on one worker pool per
   * process, shared by every router, so 58 routers (one per MoE layer) still use this many threads.
   * Default: {@code -Dmoerouter.threads=N}, else {@link Runtime#availableProcessors()} (which honours
   * {@code -XX:ActiveProcessorCount} and container limits). Takes effect from the next large call and may
   * be called at any time, from any thread. No effect when the native library did not load.
   *
   * @param threads 1 runs every call on its caller; must be {@code >= 1}
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when threads is below 1
   */
  public static void setCpuThreads(int threads) {
    if (threads < 1) throw invalid("CPU threads must be >= 1, got " + threads);
    if (!RouterNative.available()) return;
    int st = RouterNative.moe_set_num_threads(threads);
    if (st != 0) throw RouterNative.error(st, "setCpuThreads");
  }

  /**
   * The current {@link #setCpuThreads} value.
   *
   * @return threads per large CPU-backend call (the default before any call); 1 when the native library
   *     did not load
   */
  public static int cpuThreads() {
    return RouterNative.available() ? RouterNative.moe_get_num_threads() : 1;
  }

  /**
   * The configuration this router was created with; still readable after {@link #close()}.
   *
   * @return the immutable configuration (its expert bias is the creation-time one: see {@link #expertBias()}
   *     for the bias in use)
   */
  public final RouterConfig config() {
    return config;
  }

  /**
   * The backend this router runs on; still readable after {@link #close()}.
   *
   * @return JAVA, CPU or CUDA (the resolved one, never AUTO or NATIVE)
   */
  public final Backend backend() {
    return backend;
  }

  // ------------------------------------------------------------------ live routing, arrays

  /**
   * Live routing of fp32 logits (docs/semantics.md sections 1-3): for each row the k experts by ranking key,
   * best first, and their weights. Same as the overload with {@code outNonfiniteRows} null.
   *
   * @param logits fp32 logits [tokens, E], row-major (at least tokens * E elements)
   * @param tokens T, the rows to route, {@code >= 0}
   * @param outIdx receives the expert indices [tokens, k], each row best first
   * @param outWeights receives the weights [tokens, k] in the order of outIdx, scale included
   * @return the number of rows in which a logit that was read is NaN or infinite (0 when all are finite)
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when tokens is negative or an array is null
   *     or shorter than its shape; {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR} naming the
   *     first row and expert with a NaN or infinity; nothing is written in either case
   * @throws IllegalStateException when the router is closed
   */
  public final long route(float[] logits, int tokens, int[] outIdx, float[] outWeights) {
    return route(logits, tokens, outIdx, outWeights, null);
  }

  /**
   * Live routing of fp32 logits, with the per-row non-finite flags that {@link #backward(float[], int, int[],
   * float[], byte[], float[]) backward} needs under {@link NonFinitePolicy#ZERO}.
   *
   * @param logits fp32 logits [tokens, E], row-major (at least tokens * E elements)
   * @param tokens T, the rows to route, {@code >= 0}
   * @param outIdx receives the expert indices [tokens, k], each row best first
   * @param outWeights receives the weights [tokens, k] in the order of outIdx, scale included (0 for a
   *     flagged row under ZERO)
   * @param outNonfiniteRows receives [tokens] 1 for each row that read a NaN or infinite logit, else 0;
   *     null to skip
   * @return the number of rows flagged (0 when every read logit was finite)
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when tokens is negative or an array is null
   *     or shorter than its shape; {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is
   *     written in either case
   * @throws IllegalStateException when the router is closed
   */
  public final long route(float[] logits, int tokens, int[] outIdx, float[] outWeights, byte[] outNonfiniteRows) {
    acquire("route");
    try {
      checkArrays(logits == null ? -1 : logits.length, tokens, null, null, outIdx, outWeights, outNonfiniteRows);
      return routeArrays(logits, null, LogitsType.FP32, tokens, null, null, outIdx, outWeights, outNonfiniteRows);
    } finally {
      release();
    }
  }

  /**
   * Live routing of bf16 or fp16 logits given as raw 16-bit values (widened exactly to fp32 first).
   *
   * @param logits raw bf16 or fp16 bits [tokens, E], row-major
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T, the rows to route, {@code >= 0}
   * @param outIdx receives the expert indices [tokens, k], each row best first
   * @param outWeights receives the fp32 weights [tokens, k] in the order of outIdx, scale included
   * @return the number of rows in which a logit that was read is NaN or infinite
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when type is FP32 or null, tokens is negative,
   *     or an array is null or too short; {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR};
   *     nothing is written in either case
   * @throws IllegalStateException when the router is closed
   */
  public final long route(short[] logits, LogitsType type, int tokens, int[] outIdx, float[] outWeights) {
    return route(logits, type, tokens, outIdx, outWeights, null);
  }

  /**
   * Live routing of bf16 or fp16 logits, with the per-row non-finite flags.
   *
   * @param logits raw bf16 or fp16 bits [tokens, E], row-major
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T, the rows to route, {@code >= 0}
   * @param outIdx receives the expert indices [tokens, k], each row best first
   * @param outWeights receives the fp32 weights [tokens, k] in the order of outIdx, scale included
   * @param outNonfiniteRows receives [tokens] 1 for each row that read a NaN or infinite logit, else 0;
   *     null to skip
   * @return the number of rows flagged
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when type is FP32 or null, tokens is negative,
   *     or an array is null or too short; {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR};
   *     nothing is written in either case
   * @throws IllegalStateException when the router is closed
   */
  public final long route(short[] logits, LogitsType type, int tokens, int[] outIdx, float[] outWeights,
      byte[] outNonfiniteRows) {
    acquire("route");
    try {
      checkHalf(type);
      checkArrays(logits == null ? -1 : logits.length, tokens, null, null, outIdx, outWeights, outNonfiniteRows);
      return routeArrays(null, logits, type, tokens, null, null, outIdx, outWeights, outNonfiniteRows);
    } finally {
      release();
    }
  }

  /**
   * Live routing of fp32 logits into new arrays, non-finite row flags included. Allocates per call: hot
   * loops use the overloads that write into caller-provided arrays.
   *
   * @param logits fp32 logits [tokens, E], row-major
   * @param tokens T, the rows to route, {@code >= 0}
   * @return indices, weights, the non-finite row count and flags, in arrays of exactly [tokens, k] and
   *     [tokens]
   * @throws MoeRouterException as {@link #route(float[], int, int[], float[], byte[])}
   * @throws ArithmeticException when tokens * k overflows an int
   * @throws IllegalStateException when the router is closed
   */
  public final RoutingResult route(float[] logits, int tokens) {
    checkTokens(tokens);
    int[] idx = new int[Math.multiplyExact(tokens, config.topK())];
    float[] w = new float[idx.length];
    byte[] rows = rowFlags(tokens);
    long nonfinite = route(logits, tokens, idx, w, rows);
    return new RoutingResult(tokens, config.topK(), idx, w, nonfinite, rows);
  }

  // ------------------------------------------------------------------ replay, arrays

  /**
   * Replay (docs/semantics.md section 4): the experts of {@code replayIdx} in the given order, weights
   * computed from these logits. Rows are checked before anything is written: an expert out of range or
   * repeated within its row rejects the call naming the row; all -1 rows follow
   * {@link RouterConfig#minusOneRows()}.
   *
   * <pre>{@code
   * router.route(logits, T, recorded, w);                    // rollout: record
   * router.replay(logits2, T, recorded, null, idx, w2);      // training: same experts, new weights
   * }</pre>
   *
   * @param logits fp32 logits [tokens, E], row-major
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx the experts to use [tokens, k], int32; may be outIdx itself (in-place replay)
   * @param replayMask [tokens], or null: rows with mask 0 are routed live, others replayed
   * @param outIdx receives the indices used [tokens, k]: the replayed row (or the live selection)
   * @param outWeights receives the weights [tokens, k] in the order of outIdx, scale included
   * @return the number of rows in which a logit that was read is NaN or infinite (a replayed row reads its
   *     k logits, or its whole row under softmax pre)
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming the first invalid row;
   *     {@link Status#INVALID_ARGUMENT} for a negative tokens or a null or short array;
   *     {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is written in any case
   * @throws NullPointerException when replayIdx is null
   * @throws IllegalStateException when the router is closed
   */
  public final long replay(float[] logits, int tokens, int[] replayIdx, byte[] replayMask, int[] outIdx,
      float[] outWeights) {
    return replay(logits, tokens, replayIdx, replayMask, outIdx, outWeights, null);
  }

  /**
   * Replay of fp32 logits with the per-row non-finite flags, as
   * {@link #replay(float[], int, int[], byte[], int[], float[])}.
   *
   * @param logits fp32 logits [tokens, E], row-major
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx the experts to use [tokens, k], int32; may be outIdx itself
   * @param replayMask [tokens], or null: rows with mask 0 are routed live
   * @param outIdx receives the indices used [tokens, k]
   * @param outWeights receives the weights [tokens, k] in the order of outIdx, scale included
   * @param outNonfiniteRows receives [tokens] 1 for each row that read a NaN or infinite logit, else 0;
   *     null to skip
   * @return the number of rows flagged
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming the first invalid row;
   *     {@link Status#INVALID_ARGUMENT} for a negative tokens or a null or short array;
   *     {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is written in any case
   * @throws NullPointerException when replayIdx is null
   * @throws IllegalStateException when the router is closed
   */
  public final long replay(float[] logits, int tokens, int[] replayIdx, byte[] replayMask, int[] outIdx,
      float[] outWeights, byte[] outNonfiniteRows) {
    acquire("replay");
    try {
      checkArrays(logits == null ? -1 : logits.length, tokens, Objects.requireNonNull(replayIdx, "replayIdx"),
          replayMask, outIdx, outWeights, outNonfiniteRows);
      return routeArrays(logits, null, LogitsType.FP32, tokens, replayIdx, replayMask, outIdx, outWeights,
          outNonfiniteRows);
    } finally {
      release();
    }
  }

  /**
   * Replay of bf16 or fp16 logits, as {@link #replay(float[], int, int[], byte[], int[], float[])}.
   *
   * @param logits raw bf16 or fp16 bits [tokens, E], row-major
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx the experts to use [tokens, k], int32; may be outIdx itself
   * @param replayMask [tokens], or null: rows with mask 0 are routed live
   * @param outIdx receives the indices used [tokens, k]
   * @param outWeights receives the fp32 weights [tokens, k] in the order of outIdx, scale included
   * @return the number of rows in which a logit that was read is NaN or infinite
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming the first invalid row;
   *     {@link Status#INVALID_ARGUMENT} when type is FP32 or null, tokens is negative or an array is null or
   *     short; {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is written in any case
   * @throws NullPointerException when replayIdx is null
   * @throws IllegalStateException when the router is closed
   */
  public final long replay(short[] logits, LogitsType type, int tokens, int[] replayIdx, byte[] replayMask,
      int[] outIdx, float[] outWeights) {
    return replay(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, null);
  }

  /**
   * Replay of bf16 or fp16 logits with the per-row non-finite flags.
   *
   * @param logits raw bf16 or fp16 bits [tokens, E], row-major
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx the experts to use [tokens, k], int32; may be outIdx itself
   * @param replayMask [tokens], or null: rows with mask 0 are routed live
   * @param outIdx receives the indices used [tokens, k]
   * @param outWeights receives the fp32 weights [tokens, k] in the order of outIdx, scale included
   * @param outNonfiniteRows receives [tokens] 1 for each row that read a NaN or infinite logit, else 0;
   *     null to skip
   * @return the number of rows flagged
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming the first invalid row;
   *     {@link Status#INVALID_ARGUMENT} when type is FP32 or null, tokens is negative or an array is null or
   *     short; {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is written in any case
   * @throws NullPointerException when replayIdx is null
   * @throws IllegalStateException when the router is closed
   */
  public final long replay(short[] logits, LogitsType type, int tokens, int[] replayIdx, byte[] replayMask,
      int[] outIdx, float[] outWeights, byte[] outNonfiniteRows) {
    acquire("replay");
    try {
      checkHalf(type);
      checkArrays(logits == null ? -1 : logits.length, tokens, Objects.requireNonNull(replayIdx, "replayIdx"),
          replayMask, outIdx, outWeights, outNonfiniteRows);
      return routeArrays(null, logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, outNonfiniteRows);
    } finally {
      release();
    }
  }

  /**
   * Replay of fp32 logits into new arrays, non-finite row flags included. Allocates per call.
   *
   * @param logits fp32 logits [tokens, E], row-major
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx the experts to use [tokens, k], int32
   * @param replayMask [tokens], or null: rows with mask 0 are routed live
   * @return indices, weights, the non-finite row count and flags
   * @throws MoeRouterException as {@link #replay(float[], int, int[], byte[], int[], float[], byte[])}
   * @throws ArithmeticException when tokens * k overflows an int
   * @throws IllegalStateException when the router is closed
   */
  public final RoutingResult replay(float[] logits, int tokens, int[] replayIdx, byte[] replayMask) {
    checkTokens(tokens);
    int[] idx = new int[Math.multiplyExact(tokens, config.topK())];
    float[] w = new float[idx.length];
    byte[] rows = rowFlags(tokens);
    long nonfinite = replay(logits, tokens, replayIdx, replayMask, idx, w, rows);
    return new RoutingResult(tokens, config.topK(), idx, w, nonfinite, rows);
  }

  /** Row flags for the RoutingResult forms. */
  private static byte[] rowFlags(int tokens) {
    return new byte[Math.max(tokens, 0)];
  }

  // ------------------------------------------------------------------ direct buffers and raw addresses

  /**
   * Live routing or replay over direct NIO buffers, read and written from their positions (which are left
   * unchanged). Every buffer must be direct and, when its elements are wider than a byte, in
   * {@link java.nio.ByteOrder#nativeOrder()} (a big-endian view is rejected, not reinterpreted); outputs must
   * be writable. The native backends pass the addresses without copying; the Java backend copies.
   *
   * @param logits [tokens, E] of {@code type}: a FloatBuffer (FP32), a ShortBuffer of raw bits (BF16, FP16)
   *     or a ByteBuffer holding {@code type}
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx the experts to replay [tokens, k], or null for live routing
   * @param replayMask [tokens] with replayIdx, or null: rows with mask 0 are routed live
   * @param outIdx receives the expert indices [tokens, k]
   * @param outWeights receives the fp32 weights [tokens, k], scale included
   * @return the number of rows in which a logit that was read is NaN or infinite
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} naming the buffer that is null, too small
   *     (remaining elements), not direct, read-only (outputs), in the wrong byte order, or of a type that does
   *     not hold {@code type}, and for a mask without replayIdx; {@link Status#INVALID_REPLAY} for an invalid
   *     replay row; {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is written then
   * @throws NullPointerException when type is null
   * @throws IllegalStateException when the router is closed
   */
  public final long route(Buffer logits, LogitsType type, int tokens, IntBuffer replayIdx, ByteBuffer replayMask,
      IntBuffer outIdx, FloatBuffer outWeights) {
    return route(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, null);
  }

  /**
   * Routing over direct buffers with the per-row non-finite flags, as
   * {@link #route(Buffer, LogitsType, int, IntBuffer, ByteBuffer, IntBuffer, FloatBuffer)}.
   *
   * @param logits [tokens, E] of {@code type}: a FloatBuffer (FP32), a ShortBuffer of raw bits (BF16, FP16)
   *     or a ByteBuffer holding {@code type}
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx the experts to replay [tokens, k], or null for live routing
   * @param replayMask [tokens] with replayIdx, or null: rows with mask 0 are routed live
   * @param outIdx receives the expert indices [tokens, k]
   * @param outWeights receives the fp32 weights [tokens, k], scale included
   * @param outNonfiniteRows receives [tokens] 1 for each row that read a NaN or infinite logit, else 0;
   *     null to skip
   * @return the number of rows flagged
   * @throws MoeRouterException as the overload without flags; also when outNonfiniteRows is too small or
   *     read-only
   * @throws NullPointerException when type is null
   * @throws IllegalStateException when the router is closed
   */
  public final long route(Buffer logits, LogitsType type, int tokens, IntBuffer replayIdx, ByteBuffer replayMask,
      IntBuffer outIdx, FloatBuffer outWeights, ByteBuffer outNonfiniteRows) {
    acquire(replayIdx != null ? "replay" : "route");
    try {
      return checkBuffers(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, outNonfiniteRows);
    } finally {
      release();
    }
  }

  private long checkBuffers(Buffer logits, LogitsType type, int tokens, IntBuffer replayIdx, ByteBuffer replayMask,
      IntBuffer outIdx, FloatBuffer outWeights, ByteBuffer outFlags) {
    Objects.requireNonNull(type, "type");
    checkTokens(tokens);
    long n = (long) tokens * config.experts();
    if (logits != null && !(logits instanceof ByteBuffer)
        && !(logits instanceof FloatBuffer && type == LogitsType.FP32)
        && !(logits instanceof ShortBuffer && type != LogitsType.FP32))
      throw invalid("logits buffer type " + logits.getClass().getSimpleName() + " does not hold " + type
          + " (FP32: FloatBuffer, BF16/FP16: ShortBuffer, any: ByteBuffer)");
    long logitElems = logits instanceof ByteBuffer ? logits.remaining() / type.bytes() : logits == null ? -1 : logits.remaining();
    checkCapacity("logits", logitElems, n);
    checkCapacity("outIdx", outIdx == null ? -1 : outIdx.remaining(), (long) tokens * config.topK());
    checkCapacity("outWeights", outWeights == null ? -1 : outWeights.remaining(), (long) tokens * config.topK());
    if (replayIdx != null) checkCapacity("replayIdx", replayIdx.remaining(), (long) tokens * config.topK());
    if (replayMask != null) {
      if (replayIdx == null) throw invalid("replayMask given without replayIdx");
      checkCapacity("replayMask", replayMask.remaining(), tokens);
    }
    if (outFlags != null) checkCapacity("outNonfiniteRows", outFlags.remaining(), tokens);
    HostMemory.checkDirect(logits, "logits", false, true);
    HostMemory.checkDirect(replayIdx, "replayIdx", false, true);
    HostMemory.checkDirect(replayMask, "replayMask", false, false);
    HostMemory.checkDirect(outIdx, "outIdx", true, true);
    HostMemory.checkDirect(outWeights, "outWeights", true, true);
    HostMemory.checkDirect(outFlags, "outNonfiniteRows", true, false);
    return routeBuffers(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, outFlags);
  }

  /**
   * Live routing or replay over raw host addresses, for example {@code MemorySegment.address()} ({@code
   * MoeSegments} on JDK 22+ checks sizes, alignment and liveness first). Nothing about the memory can be
   * checked here: sizes, alignment (of the element type) and lifetime are the caller's, and a wrong address
   * crashes the JVM. The Java backend copies through the memory; the native ones use it in place.
   *
   * @param logits address of [tokens, E] logits of {@code type}, row-major
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx address of the int32 experts to replay [tokens, k], or 0 for live routing
   * @param replayMask address of the uint8 mask [tokens], or 0: rows with mask 0 are routed live
   * @param outIdx address receiving the int32 indices [tokens, k]
   * @param outWeights address receiving the fp32 weights [tokens, k]
   * @return the number of rows in which a logit that was read is NaN or infinite
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a negative tokens, a 0 logits or output
   *     address with tokens &gt; 0, or a mask without replayIdx; {@link Status#INVALID_REPLAY} for an invalid
   *     replay row; {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; {@link Status#UNSUPPORTED}
   *     on the Java backend above 2^31 logits; nothing is written then
   * @throws NullPointerException when type is null
   * @throws IllegalStateException when the router is closed
   */
  public final long routeAddress(long logits, LogitsType type, long tokens, long replayIdx, long replayMask,
      long outIdx, long outWeights) {
    return routeAddress(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, 0L);
  }

  /**
   * Routing over raw host addresses with the per-row non-finite flags, as
   * {@link #routeAddress(long, LogitsType, long, long, long, long, long)}.
   *
   * @param logits address of [tokens, E] logits of {@code type}, row-major
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx address of the int32 experts to replay [tokens, k], or 0 for live routing
   * @param replayMask address of the uint8 mask [tokens], or 0
   * @param outIdx address receiving the int32 indices [tokens, k]
   * @param outWeights address receiving the fp32 weights [tokens, k]
   * @param outNonfiniteRows address receiving the uint8 flags [tokens], or 0 to skip
   * @return the number of rows in which a logit that was read is NaN or infinite
   * @throws MoeRouterException as the overload without flags
   * @throws NullPointerException when type is null
   * @throws IllegalStateException when the router is closed
   */
  public final long routeAddress(long logits, LogitsType type, long tokens, long replayIdx, long replayMask,
      long outIdx, long outWeights, long outNonfiniteRows) {
    acquire(replayIdx != 0 ? "replay" : "route");
    try {
      Objects.requireNonNull(type, "type");
      if (tokens < 0) throw invalid("tokens must be >= 0, got " + tokens);
      if (tokens > 0 && (logits == 0 || outIdx == 0 || outWeights == 0)) throw invalid("logits and outputs must not be 0");
      if (replayMask != 0 && replayIdx == 0) throw invalid("replayMask given without replayIdx");
      return routeHost(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, outNonfiniteRows);
    } finally {
      release();
    }
  }

  /**
   * CUDA only: live routing or replay over device pointers, enqueued on {@code stream} without
   * synchronising. Replay rows are validated on the device, and under {@link NonFinitePolicy#ERROR} so are
   * the logits the call reads: a rejected call writes no output and is reported by the next
   * {@link #checkReplay()}, which callers must run before trusting the outputs.
   *
   * <pre>{@code
   * router.routeDevice(dLogits, LogitsType.BF16, T, dRecorded, 0, dIdx, dW, 0, stream);   // replay
   * // ... more work on the stream ...
   * router.checkReplay();                                  // syncs; throws if a row was rejected
   * }</pre>
   *
   * @param logits device pointer to [tokens, E] logits of {@code type}, row-major
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx device pointer to the int32 experts to replay [tokens, k], or 0 for live routing
   * @param replayMask device pointer to the uint8 mask [tokens], or 0
   * @param outIdx device pointer receiving the int32 indices [tokens, k]
   * @param outWeights device pointer receiving the fp32 weights [tokens, k]
   * @param nonfiniteRows device pointer to an int64 receiving the non-finite row count, or 0
   * @param stream a {@code cudaStream_t} on this router's device; 0 for the default stream
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a router that is not CUDA; argument errors
   *     found on the host ({@link Status#INVALID_ARGUMENT}) and launch failures ({@link Status#CUDA_ERROR})
   *     at once
   * @throws IllegalStateException when the router is closed
   */
  public final void routeDevice(long logits, LogitsType type, long tokens, long replayIdx, long replayMask,
      long outIdx, long outWeights, long nonfiniteRows, long stream) {
    routeDevice(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, 0L, nonfiniteRows, stream);
  }

  /**
   * CUDA only: {@link #routeDevice(long, LogitsType, long, long, long, long, long, long, long)} that also
   * writes the per-row non-finite flags, which
   * {@link #backwardDevice(long, LogitsType, long, long, long, long, long, long)} takes under
   * {@link NonFinitePolicy#ZERO}.
   *
   * @param logits device pointer to [tokens, E] logits of {@code type}, row-major
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx device pointer to the int32 experts to replay [tokens, k], or 0 for live routing
   * @param replayMask device pointer to the uint8 mask [tokens], or 0
   * @param outIdx device pointer receiving the int32 indices [tokens, k]
   * @param outWeights device pointer receiving the fp32 weights [tokens, k]
   * @param outNonfiniteRowFlags device pointer receiving the uint8 flags [tokens], or 0
   * @param nonfiniteRows device pointer to an int64 receiving the non-finite row count, or 0
   * @param stream a {@code cudaStream_t} on this router's device; 0 for the default stream
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a router that is not CUDA; host-side argument
   *     errors and launch failures at once; row rejections through {@link #checkReplay()}
   * @throws IllegalStateException when the router is closed
   */
  public final void routeDevice(long logits, LogitsType type, long tokens, long replayIdx, long replayMask,
      long outIdx, long outWeights, long outNonfiniteRowFlags, long nonfiniteRows, long stream) {
    acquire("routeDevice");
    try {
      routeDeviceImpl(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, outNonfiniteRowFlags,
          nonfiniteRows, stream);
    } finally {
      release();
    }
  }

  /**
   * CUDA only: synchronises with every device call enqueued on this router and throws if one since the last
   * check was rejected. On the host backends, which reject at the call, it returns at once.
   *
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} for an invalid replay or backward row (the
   *     lowest), else {@link Status#NONFINITE} for the lowest row that read a NaN or infinity under
   *     {@link NonFinitePolicy#ERROR}; {@link Status#CUDA_ERROR} when the synchronisation itself fails
   * @throws IllegalStateException when the router is closed
   */
  public final void checkReplay() {
    acquire("checkReplay");
    try {
      checkReplayImpl();
    } finally {
      release();
    }
  }

  // ------------------------------------------------------------------ backward

  /**
   * Backward of the weights (docs/semantics.md section 5): gradLogits from gradWeights for the experts the
   * forward used. Every element of gradLogits is written (it is overwritten, not accumulated). Routers with
   * {@link NonFinitePolicy#ZERO} need the overload that takes the forward's non-finite row flags.
   *
   * @param logits the forward's fp32 logits [tokens, E]
   * @param tokens T, the rows, {@code >= 0}
   * @param idx the forward's output indices [tokens, k] (live or replayed; never -1)
   * @param gradWeights the upstream gradient of the weights [tokens, k], in the order of idx
   * @param gradLogits receives the gradient of the logits [tokens, E]
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming the first row of idx out of range or
   *     repeated; {@link Status#INVALID_ARGUMENT} for a short or null array, and under ZERO (no flags);
   *     {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is written then
   * @throws IllegalStateException when the router is closed
   */
  public final void backward(float[] logits, int tokens, int[] idx, float[] gradWeights, float[] gradLogits) {
    backward(logits, tokens, idx, gradWeights, null, gradLogits);
  }

  /**
   * Backward with the forward's non-finite row flags (its {@code outNonfiniteRows}). Under
   * {@link NonFinitePolicy#ZERO} they are required and flagged rows get a zero gradient (a live row read its
   * whole row, which the indices do not tell); otherwise they may be null and are not read. Under ERROR a
   * non-finite logit this call reads rejects it.
   *
   * @param logits the forward's fp32 logits [tokens, E]
   * @param tokens T, the rows, {@code >= 0}
   * @param idx the forward's output indices [tokens, k] (live or replayed; never -1)
   * @param gradWeights the upstream gradient of the weights [tokens, k], in the order of idx
   * @param nonfiniteRows the forward's flags [tokens]; null allowed unless the policy is ZERO
   * @param gradLogits receives the gradient of the logits [tokens, E]; every element is written
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming the first invalid row of idx;
   *     {@link Status#INVALID_ARGUMENT} for a short or null array (flags under ZERO included);
   *     {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is written then
   * @throws IllegalStateException when the router is closed
   */
  public final void backward(float[] logits, int tokens, int[] idx, float[] gradWeights, byte[] nonfiniteRows,
      float[] gradLogits) {
    acquire("backward");
    try {
      checkBackward(logits == null ? -1 : logits.length, tokens, idx, gradWeights, nonfiniteRows, gradLogits);
      backwardArrays(logits, null, LogitsType.FP32, tokens, idx, gradWeights, nonfiniteRows, gradLogits);
    } finally {
      release();
    }
  }

  /**
   * Backward of bf16 or fp16 logits, as {@link #backward(float[], int, int[], float[], float[])}.
   *
   * @param logits the forward's raw bf16 or fp16 logits [tokens, E]
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T, the rows, {@code >= 0}
   * @param idx the forward's output indices [tokens, k] (never -1)
   * @param gradWeights the upstream gradient of the weights [tokens, k], in the order of idx
   * @param gradLogits receives the fp32 gradient of the logits [tokens, E]; every element is written
   * @throws MoeRouterException as the fp32 overload; {@link Status#INVALID_ARGUMENT} also when type is FP32
   *     or null
   * @throws IllegalStateException when the router is closed
   */
  public final void backward(short[] logits, LogitsType type, int tokens, int[] idx, float[] gradWeights,
      float[] gradLogits) {
    backward(logits, type, tokens, idx, gradWeights, null, gradLogits);
  }

  /**
   * Backward of bf16 or fp16 logits with the forward's non-finite row flags, as
   * {@link #backward(float[], int, int[], float[], byte[], float[])}.
   *
   * @param logits the forward's raw bf16 or fp16 logits [tokens, E]
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T, the rows, {@code >= 0}
   * @param idx the forward's output indices [tokens, k] (never -1)
   * @param gradWeights the upstream gradient of the weights [tokens, k], in the order of idx
   * @param nonfiniteRows the forward's flags [tokens]; null allowed unless the policy is ZERO
   * @param gradLogits receives the fp32 gradient of the logits [tokens, E]; every element is written
   * @throws MoeRouterException as the fp32 overload; {@link Status#INVALID_ARGUMENT} also when type is FP32
   *     or null
   * @throws IllegalStateException when the router is closed
   */
  public final void backward(short[] logits, LogitsType type, int tokens, int[] idx, float[] gradWeights,
      byte[] nonfiniteRows, float[] gradLogits) {
    acquire("backward");
    try {
      checkHalf(type);
      checkBackward(logits == null ? -1 : logits.length, tokens, idx, gradWeights, nonfiniteRows, gradLogits);
      backwardArrays(null, logits, type, tokens, idx, gradWeights, nonfiniteRows, gradLogits);
    } finally {
      release();
    }
  }

  /**
   * Backward over raw host addresses (sizes, alignment and lifetime are the caller's; see
   * {@link #routeAddress(long, LogitsType, long, long, long, long, long)}). Not for
   * {@link NonFinitePolicy#ZERO} routers, which need the flags.
   *
   * @param logits address of the forward's [tokens, E] logits of {@code type}
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param idx address of the forward's int32 indices [tokens, k]
   * @param gradWeights address of the fp32 upstream gradient [tokens, k]
   * @param gradLogits address receiving the fp32 gradient [tokens, E]; every element is written
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a negative tokens, a 0 address with
   *     tokens &gt; 0, or a ZERO router; {@link Status#INVALID_REPLAY} for an invalid row of idx;
   *     {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is written then
   * @throws NullPointerException when type is null
   * @throws IllegalStateException when the router is closed
   */
  public final void backwardAddress(long logits, LogitsType type, long tokens, long idx, long gradWeights,
      long gradLogits) {
    backwardAddress(logits, type, tokens, idx, gradWeights, 0L, gradLogits);
  }

  /**
   * Backward over raw host addresses with the forward's non-finite row flags.
   *
   * @param logits address of the forward's [tokens, E] logits of {@code type}
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param idx address of the forward's int32 indices [tokens, k]
   * @param gradWeights address of the fp32 upstream gradient [tokens, k]
   * @param nonfiniteRows address of the forward's uint8 flags [tokens]; 0 allowed unless the policy is ZERO
   * @param gradLogits address receiving the fp32 gradient [tokens, E]; every element is written
   * @throws MoeRouterException as the overload without flags (a 0 flags address is rejected under ZERO)
   * @throws NullPointerException when type is null
   * @throws IllegalStateException when the router is closed
   */
  public final void backwardAddress(long logits, LogitsType type, long tokens, long idx, long gradWeights,
      long nonfiniteRows, long gradLogits) {
    acquire("backward");
    try {
      Objects.requireNonNull(type, "type");
      if (tokens < 0) throw invalid("tokens must be >= 0, got " + tokens);
      if (tokens > 0 && (logits == 0 || idx == 0 || gradWeights == 0 || gradLogits == 0))
        throw invalid("logits, indices and gradients must not be 0");
      if (tokens > 0 && nonfiniteRows == 0) checkZeroFlags();
      backwardHost(logits, type, tokens, idx, gradWeights, nonfiniteRows, gradLogits);
    } finally {
      release();
    }
  }

  /**
   * CUDA only: backward over device pointers, enqueued on {@code stream} without synchronising; an invalid
   * row of idx (or a non-finite read under ERROR) is reported by the next {@link #checkReplay()}. Not for
   * {@link NonFinitePolicy#ZERO} routers.
   *
   * @param logits device pointer to the forward's [tokens, E] logits of {@code type}
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param idx device pointer to the forward's int32 indices [tokens, k]
   * @param gradWeights device pointer to the fp32 upstream gradient [tokens, k]
   * @param gradLogits device pointer receiving the fp32 gradient [tokens, E]
   * @param stream a {@code cudaStream_t} on this router's device; 0 for the default stream
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a router that is not CUDA; host-side argument
   *     errors (a ZERO router included) and launch failures at once
   * @throws IllegalStateException when the router is closed
   */
  public final void backwardDevice(long logits, LogitsType type, long tokens, long idx, long gradWeights,
      long gradLogits, long stream) {
    backwardDevice(logits, type, tokens, idx, gradWeights, 0L, gradLogits, stream);
  }

  /**
   * CUDA only: backward over device pointers with the forward's per-row non-finite flags (its
   * {@code outNonfiniteRowFlags}), as {@link #backwardDevice(long, LogitsType, long, long, long, long, long)}.
   *
   * @param logits device pointer to the forward's [tokens, E] logits of {@code type}
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param idx device pointer to the forward's int32 indices [tokens, k]
   * @param gradWeights device pointer to the fp32 upstream gradient [tokens, k]
   * @param nonfiniteRowFlags device pointer to the uint8 flags [tokens]; required under ZERO, else may be 0
   *     and is not read
   * @param gradLogits device pointer receiving the fp32 gradient [tokens, E]
   * @param stream a {@code cudaStream_t} on this router's device; 0 for the default stream
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a router that is not CUDA; host-side argument
   *     errors and launch failures at once; row rejections through {@link #checkReplay()}
   * @throws IllegalStateException when the router is closed
   */
  public final void backwardDevice(long logits, LogitsType type, long tokens, long idx, long gradWeights,
      long nonfiniteRowFlags, long gradLogits, long stream) {
    acquire("backwardDevice");
    try {
      backwardDeviceImpl(logits, type, tokens, idx, gradWeights, nonfiniteRowFlags, gradLogits, stream);
    } finally {
      release();
    }
  }

  // ------------------------------------------------------------------ training extras (spec section 6)

  /**
   * Tokens per expert of a selection (docs/semantics.md section 6): how many rows of idx name each expert.
   * Count the selection actually used (the replayed one under replay).
   *
   * @param idx expert indices [tokens, k]
   * @param tokens T, the rows, {@code >= 0}
   * @param outCounts receives the counts [E] (overwritten, not accumulated)
   * @return outCounts
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming a row with an expert out of range;
   *     {@link Status#INVALID_ARGUMENT} for a short or null array
   * @throws IllegalStateException when the router is closed
   */
  public final int[] tokensPerExpert(int[] idx, int tokens, int[] outCounts) {
    acquire("tokensPerExpert");
    try {
      return countTokens(idx, tokens, null, outCounts);
    } finally {
      release();
    }
  }

  /** Both int[] overloads of tokensPerExpert: validRows null counts every row. */
  private int[] countTokens(int[] idx, int tokens, byte[] validRows, int[] outCounts) {
    int k = config.topK(), e = config.experts();
    checkCounting("idx", idx == null ? -1 : idx.length, (long) tokens * k, tokens, validRows, outCounts);
    if (nativeHelpers()) {
      int st = RouterNative.moe_tokens_per_expert_valid(idx, validRows, tokens, k, e, outCounts);
      if (st != 0) throw RouterNative.error(st, "tokensPerExpert");
      return outCounts;
    }
    for (int t = 0; t < tokens; t++)
      if (JavaRouting.checkReplayRow(idx, t * k, k, e) == JavaRouting.REPLAY_OUT_OF_RANGE)
        throw new MoeRouterException(Status.INVALID_REPLAY, "tokensPerExpert failed: "
            + JavaRouting.replayRowMessage(t, idx, t * k, k, e));
    JavaTraining.countTokens(idx, null, validRows, tokens, k, e, outCounts);
    return outCounts;
  }

  /** The checks of every tokensPerExpert overload, in their order: tokens, validRows, the input, outCounts. */
  private void checkCounting(String input, int inputLength, long inputNeed, int tokens, byte[] validRows,
      int[] outCounts) {
    checkTokens(tokens);
    if (validRows != null) checkCapacity("validRows", validRows.length, tokens);
    checkCapacity(input, inputLength, inputNeed);
    checkCapacity("outCounts", outCounts == null ? -1 : outCounts.length, config.experts());
  }

  /**
   * Dense views of a selection (docs/semantics.md section 6): the routing map and the weights scattered
   * into [tokens, E]. Both outputs are fully overwritten.
   *
   * @param idx expert indices [tokens, k]
   * @param weights their weights [tokens, k]; read only when outProbs is given (may be null otherwise)
   * @param tokens T, the rows, {@code >= 0}
   * @param outMap receives [tokens, E] bytes, 1 where selected, else 0; null to skip
   * @param outProbs receives [tokens, E] the weights at the selected experts, 0 elsewhere; null to skip
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming a row of idx out of range or repeated;
   *     {@link Status#INVALID_ARGUMENT} for a short or null array
   * @throws IllegalStateException when the router is closed
   */
  public final void denseViews(int[] idx, float[] weights, int tokens, byte[] outMap, float[] outProbs) {
    acquire("denseViews");
    try {
      dense(idx, weights, tokens, outMap, null, outProbs);
    } finally {
      release();
    }
  }

  /**
   * The routing map of a selection as bits: word {@code t * W + e / 64}, bit {@code e % 64} is set where
   * token t selected expert e, with W = ceil(E / 64) words per row.
   *
   * @param idx expert indices [tokens, k]
   * @param tokens T, the rows, {@code >= 0}
   * @param outBits receives [tokens, ceil(E / 64)] words, fully overwritten
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming a row of idx out of range or repeated;
   *     {@link Status#INVALID_ARGUMENT} for a short array
   * @throws NullPointerException when outBits is null
   * @throws IllegalStateException when the router is closed
   */
  public final void denseMapBits(int[] idx, int tokens, long[] outBits) {
    acquire("denseMapBits");
    try {
      dense(idx, null, tokens, null, Objects.requireNonNull(outBits, "outBits"), null);
    } finally {
      release();
    }
  }

  private void dense(int[] idx, float[] weights, int tokens, byte[] map, long[] bits, float[] probs) {
    checkTokens(tokens);
    final int k = config.topK(), e = config.experts(), words = (e + 63) / 64;
    long tk = (long) tokens * k, te = (long) tokens * e;
    checkCapacity("idx", idx == null ? -1 : idx.length, tk);
    if (probs != null) checkCapacity("weights", weights == null ? -1 : weights.length, tk);
    if (map != null) checkCapacity("outMap", map.length, te);
    if (probs != null) checkCapacity("outProbs", probs.length, te);
    if (bits != null) checkCapacity("outBits", bits.length, (long) tokens * words);
    if (nativeHelpers()) {
      int st = RouterNative.moe_dense_views(idx, weights, tokens, k, e, map, bits, probs);
      if (st != 0) throw RouterNative.error(st, "denseViews");
      return;
    }
    for (int t = 0; t < tokens; t++)
      if (JavaRouting.checkReplayRow(idx, t * k, k, e) != JavaRouting.REPLAY_OK)
        throw new MoeRouterException(Status.INVALID_REPLAY, "denseViews failed: "
            + JavaRouting.replayRowMessage(t, idx, t * k, k, e));
    if (map != null) java.util.Arrays.fill(map, 0, (int) te, (byte) 0);
    if (probs != null) java.util.Arrays.fill(probs, 0, (int) te, 0f);
    if (bits != null) java.util.Arrays.fill(bits, 0, tokens * words, 0L);
    for (int t = 0; t < tokens; t++)
      for (int j = 0; j < k; j++) {
        int x = idx[t * k + j];
        if (map != null) map[t * e + x] = 1;
        if (probs != null) probs[t * e + x] = weights[t * k + j];
        if (bits != null) bits[t * words + x / 64] |= 1L << (x % 64);
      }
  }

  /**
   * Switch load-balancing loss {@code coeff * E * sum_i f_i * P_i} over every row (no padding): the aux
   * scores A (full-row softmax, or sigmoid / sqrtsoftplus normalised per row) and the plain top-k map of the
   * logits (no groups, no bias), with {@code f_i = count_i / (tokens * k)} and {@code P_i} the mean aux score
   * of expert i. {@link #losses} is the general form (padding, the sequence and global losses, all at once);
   * this is its aux loss with every row valid. Allocates a {@link LossValues} per call.
   *
   * @param logits fp32 logits [tokens, E]
   * @param tokens T, the rows, {@code >= 0}
   * @param coeff the loss coefficient, finite and {@code >= 0}
   * @param outScores receives the aux scores [tokens, E]; null to skip
   * @param outTopkMap receives the plain top-k map [tokens, E], bytes 1 or 0; null to skip
   * @param outCounts receives the map's counts [E]; null to skip
   * @param gradLogits [tokens, E] or null: the loss gradient is ADDED to it, so it can accumulate onto
   *     {@link #backward}'s result
   * @return the loss (0 for tokens = 0)
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a negative or non-finite coeff, a
   *     negative tokens, or a short or null array
   * @throws IllegalStateException when the router is closed
   */
  public final float auxLoss(float[] logits, int tokens, float coeff, float[] outScores, byte[] outTopkMap,
      int[] outCounts, float[] gradLogits) {
    acquire("auxLoss");
    try {
      checkLoss(logits == null ? -1 : logits.length, tokens, outScores, outTopkMap, outCounts, gradLogits);
      return auxLossArrays(logits, null, LogitsType.FP32, tokens, coeff, outScores, outTopkMap, outCounts, gradLogits);
    } finally {
      release();
    }
  }

  /**
   * The aux loss of bf16 or fp16 logits, as
   * {@link #auxLoss(float[], int, float, float[], byte[], int[], float[])}.
   *
   * @param logits raw bf16 or fp16 logits [tokens, E]
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T, the rows, {@code >= 0}
   * @param coeff the loss coefficient, finite and {@code >= 0}
   * @param outScores receives the aux scores [tokens, E]; null to skip
   * @param outTopkMap receives the plain top-k map [tokens, E]; null to skip
   * @param outCounts receives the map's counts [E]; null to skip
   * @param gradLogits [tokens, E] or null: the loss gradient is ADDED to it
   * @return the loss (0 for tokens = 0)
   * @throws MoeRouterException as the fp32 overload; also when type is FP32 or null
   * @throws IllegalStateException when the router is closed
   */
  public final float auxLoss(short[] logits, LogitsType type, int tokens, float coeff, float[] outScores,
      byte[] outTopkMap, int[] outCounts, float[] gradLogits) {
    acquire("auxLoss");
    try {
      checkHalf(type);
      checkLoss(logits == null ? -1 : logits.length, tokens, outScores, outTopkMap, outCounts, gradLogits);
      return auxLossArrays(null, logits, type, tokens, coeff, outScores, outTopkMap, outCounts, gradLogits);
    } finally {
      release();
    }
  }

  private float auxLossArrays(float[] f32, short[] half, LogitsType type, int tokens, float coeff, float[] scores,
      byte[] map, int[] counts, float[] grad) {
    LossValues v = new LossValues(config.experts());
    lossesArrays(f32, half, type, tokens, null, LossConfig.builder().auxLoss(coeff).build(), null, 0, v, scores, map,
        grad);
    if (counts != null) System.arraycopy(v.auxTokensPerExpert(), 0, counts, 0, config.experts());
    return (float) v.auxLoss;
  }

  /**
   * Router z-loss {@code coeff * mean_t(logsumexp(L_t)^2)} over every row (docs/semantics.md section 6); its
   * gradient is ADDED to gradLogits if given. Allocates a {@link LossValues} per call.
   *
   * @param logits fp32 logits [tokens, E]
   * @param tokens T, the rows, {@code >= 0}
   * @param coeff the loss coefficient, finite and {@code >= 0}
   * @param gradLogits [tokens, E] or null: the loss gradient is added to it
   * @return the loss (0 for tokens = 0)
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a negative or non-finite coeff, a
   *     negative tokens, or a short or null array
   * @throws IllegalStateException when the router is closed
   */
  public final float zLoss(float[] logits, int tokens, float coeff, float[] gradLogits) {
    acquire("zLoss");
    try {
      checkLoss(logits == null ? -1 : logits.length, tokens, null, null, null, gradLogits);
      return zLossArrays(logits, null, LogitsType.FP32, tokens, coeff, gradLogits);
    } finally {
      release();
    }
  }

  /**
   * Router z-loss of bf16 or fp16 logits, as {@link #zLoss(float[], int, float, float[])}.
   *
   * @param logits raw bf16 or fp16 logits [tokens, E]
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T, the rows, {@code >= 0}
   * @param coeff the loss coefficient, finite and {@code >= 0}
   * @param gradLogits [tokens, E] or null: the loss gradient is added to it
   * @return the loss (0 for tokens = 0)
   * @throws MoeRouterException as the fp32 overload; also when type is FP32 or null
   * @throws IllegalStateException when the router is closed
   */
  public final float zLoss(short[] logits, LogitsType type, int tokens, float coeff, float[] gradLogits) {
    acquire("zLoss");
    try {
      checkHalf(type);
      checkLoss(logits == null ? -1 : logits.length, tokens, null, null, null, gradLogits);
      return zLossArrays(null, logits, type, tokens, coeff, gradLogits);
    } finally {
      release();
    }
  }

  private float zLossArrays(float[] f32, short[] half, LogitsType type, int tokens, float coeff, float[] grad) {
    LossValues v = new LossValues(config.experts());
    lossesArrays(f32, half, type, tokens, null, LossConfig.builder().zLoss(coeff).build(), null, 0, v, null, null, grad);
    return (float) v.zLoss;
  }

  // ------------------------------------------------------------------ spec section 6 with padding

  /**
   * The valid tokens of docs/semantics.md section 6: a row is valid when it is not padding and, under
   * {@link NonFinitePolicy#ZERO}, holds no NaN or infinite logit. The counts and losses take
   * {@code outValid}; padding changes no index, weight or drop decision, only those.
   *
   * @param logits fp32 logits [tokens, E]; read only under ZERO (may be null otherwise)
   * @param tokens T, the rows, {@code >= 0}
   * @param paddingMask Megatron's padding mask [tokens] (nonzero = padding, excluded), or null for none
   * @param outValid receives [tokens] 1 for a valid row, else 0
   * @return N, the number of valid rows
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a negative tokens or a short or null
   *     array (logits under ZERO)
   * @throws IllegalStateException when the router is closed
   */
  public final long validTokens(float[] logits, int tokens, byte[] paddingMask, byte[] outValid) {
    acquire("validTokens");
    try {
      checkValid(logits == null ? -1 : logits.length, tokens, paddingMask, outValid);
      return validTokensArrays(logits, null, LogitsType.FP32, tokens, paddingMask, outValid);
    } finally {
      release();
    }
  }

  /**
   * The valid tokens of bf16 or fp16 logits, as {@link #validTokens(float[], int, byte[], byte[])}.
   *
   * @param logits raw bf16 or fp16 logits [tokens, E]; read only under ZERO (may be null otherwise)
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T, the rows, {@code >= 0}
   * @param paddingMask the padding mask [tokens] (nonzero = padding), or null for none
   * @param outValid receives [tokens] 1 for a valid row, else 0
   * @return N, the number of valid rows
   * @throws MoeRouterException as the fp32 overload; also when type is FP32 or null
   * @throws IllegalStateException when the router is closed
   */
  public final long validTokens(short[] logits, LogitsType type, int tokens, byte[] paddingMask, byte[] outValid) {
    acquire("validTokens");
    try {
      checkHalf(type);
      checkValid(logits == null ? -1 : logits.length, tokens, paddingMask, outValid);
      return validTokensArrays(null, logits, type, tokens, paddingMask, outValid);
    } finally {
      release();
    }
  }

  /**
   * Tokens per expert over the valid rows of a selection: {@code valid_tokens_per_expert}, what the
   * expert-bias update ({@link #updateExpertBias}) takes. With token dropping count the final map instead
   * ({@link #tokensPerExpert(byte[], int, byte[], int[])}).
   *
   * @param idx expert indices [tokens, k]
   * @param tokens T, the rows, {@code >= 0}
   * @param validRows [tokens] from {@link #validTokens} (nonzero = valid), or null for every row
   * @param outCounts receives the counts [E] (overwritten)
   * @return outCounts
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming a row with an expert out of range;
   *     {@link Status#INVALID_ARGUMENT} for a short or null array
   * @throws IllegalStateException when the router is closed
   */
  public final int[] tokensPerExpert(int[] idx, int tokens, byte[] validRows, int[] outCounts) {
    acquire("tokensPerExpert");
    try {
      return countTokens(idx, tokens, validRows, outCounts);
    } finally {
      release();
    }
  }

  /**
   * Column sums of a routing map over the valid rows: {@code tokens_per_expert} /
   * {@code valid_tokens_per_expert} of the final map of {@link #dropTokens} (with {@code padToCapacity} its
   * padding slots count, as the dispatcher sees them).
   *
   * @param map a routing map [tokens, E], bytes, nonzero = routed
   * @param tokens T, the rows, {@code >= 0}
   * @param validRows [tokens] (nonzero = valid), or null for every row
   * @param outCounts receives the counts [E] (overwritten)
   * @return outCounts
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a negative tokens or a short or null array
   * @throws IllegalStateException when the router is closed
   */
  public final int[] tokensPerExpert(byte[] map, int tokens, byte[] validRows, int[] outCounts) {
    acquire("tokensPerExpert");
    try {
      int e = config.experts();
      checkCounting("map", map == null ? -1 : map.length, (long) tokens * e, tokens, validRows, outCounts);
      if (nativeHelpers()) {
        int st = RouterNative.moe_map_tokens_per_expert(map, validRows, tokens, e, outCounts);
        if (st != 0) throw RouterNative.error(st, "tokensPerExpert");
      } else {
        JavaTraining.countTokens(null, map, validRows, tokens, 0, e, outCounts);
      }
      return outCounts;
    } finally {
      release();
    }
  }

  /**
   * The router losses of {@code losses} over logits [tokens, E] and the valid rows (docs/semantics.md
   * section 6): aux scores A (softmax, or S / (sum S + 1e-20) for sigmoid and sqrtsoftplus) and the plain
   * top-k map M of the logits (the k largest, ties to the lower index; no groups, bias, replay or dropping),
   * both over the valid rows only, then
   * <ul>
   *   <li>aux: {@code coeff * E / (k N^2) * sum_i c_i sum_t A[t, i]}, c = M's counts, N = valid rows;</li>
   *   <li>seq aux: the same per sequence with Nq = N / B (Megatron's mean valid count per sequence), summed
   *       and divided by B;</li>
   *   <li>global aux: {@code coeff * E / (k Ng^2) * sum_i G_i sum_t A[t, i]} with G and Ng passed in
   *       ({@link GlobalAuxTracker}; Ng = 0 gives 0);</li>
   *   <li>z: {@code coeff * sum_t v_t logsumexp(L_t)^2 / max(N, 1)}.</li>
   * </ul>
   * With N = 0 every loss is 0. Sums are merged in an order independent of the thread count.
   *
   * <pre>{@code
   * LossValues values = new LossValues(E);                       // reused every step
   * long n = router.validTokens(logits, T, paddingMask, valid);
   * router.backward(logits, T, idx, dW, rows, dL);               // writes every element of dL
   * router.losses(logits, T, valid, lossConfig, null, 0, dL, values);   // adds the losses' gradient
   * double total = values.total();
   * }</pre>
   *
   * <p>Traps: invalid rows get no gradient and count nowhere, but they are still routed (and dropped)
   * like any row; the sequence loss needs {@code tokens} to be a multiple of its sequence length; under
   * PROPAGATE a valid row with a NaN logit makes the losses NaN; gradLogits is added to, so call
   * {@link #backward} (which overwrites) first.
   *
   * @param logits fp32 logits [tokens, E]
   * @param tokens T, the rows, {@code >= 0}
   * @param validRows [tokens] from {@link #validTokens} (nonzero = valid), or null for every row; under
   *     {@link NonFinitePolicy#ZERO} a row with a non-finite logit is invalid whatever it says
   * @param losses which losses, with their coefficients
   * @param globalTokensPerExpert G [E], finite and {@code >= 0}; read only when the global loss is on (may
   *     be null otherwise)
   * @param globalNumTokens Ng, finite and {@code >= 0}; read only when the global loss is on
   * @param gradLogits [tokens, E] or null: the gradient of the sum of the losses (upstream 1; c, G, Ng and N
   *     held constant, as Megatron's autograd does) is ADDED to it
   * @param out receives the four values, N and c (overwritten); made for this router's E
   * @return out
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a negative tokens, a short or null array,
   *     an {@code out} of another expert count, a token count that is not a multiple of the sequence length
   *     (seq aux on), a missing, negative or non-finite G or Ng (global aux on); {@link Status#UNSUPPORTED} on
   *     the Java backend above 2^31 logits; nothing is written then
   * @throws NullPointerException when losses or out is null
   * @throws IllegalStateException when the router is closed
   */
  public final LossValues losses(float[] logits, int tokens, byte[] validRows, LossConfig losses,
      double[] globalTokensPerExpert, double globalNumTokens, float[] gradLogits, LossValues out) {
    acquire("losses");
    try {
      checkLosses(logits == null ? -1 : logits.length, tokens, validRows, losses, globalTokensPerExpert,
          globalNumTokens, gradLogits, out);
      lossesArrays(logits, null, LogitsType.FP32, tokens, validRows, losses, globalTokensPerExpert, globalNumTokens,
          out, null, null, gradLogits);
      return out;
    } finally {
      release();
    }
  }

  /**
   * The router losses of bf16 or fp16 logits, as
   * {@link #losses(float[], int, byte[], LossConfig, double[], double, float[], LossValues)}.
   *
   * @param logits raw bf16 or fp16 logits [tokens, E]
   * @param type {@link LogitsType#BF16} or {@link LogitsType#FP16}
   * @param tokens T, the rows, {@code >= 0}
   * @param validRows [tokens] (nonzero = valid), or null for every row
   * @param losses which losses, with their coefficients
   * @param globalTokensPerExpert G [E]; read only when the global loss is on (may be null otherwise)
   * @param globalNumTokens Ng; read only when the global loss is on
   * @param gradLogits [tokens, E] or null: the gradient of the sum of the losses is ADDED to it
   * @param out receives the four values, N and c (overwritten)
   * @return out
   * @throws MoeRouterException as the fp32 overload; also when type is FP32 or null
   * @throws NullPointerException when losses or out is null
   * @throws IllegalStateException when the router is closed
   */
  public final LossValues losses(short[] logits, LogitsType type, int tokens, byte[] validRows, LossConfig losses,
      double[] globalTokensPerExpert, double globalNumTokens, float[] gradLogits, LossValues out) {
    acquire("losses");
    try {
      checkHalf(type);
      checkLosses(logits == null ? -1 : logits.length, tokens, validRows, losses, globalTokensPerExpert,
          globalNumTokens, gradLogits, out);
      lossesArrays(null, logits, type, tokens, validRows, losses, globalTokensPerExpert, globalNumTokens, out, null,
          null, gradLogits);
      return out;
    } finally {
      release();
    }
  }

  /**
   * Token dropping (docs/semantics.md section 6) of a selection (live or replayed: the indices the forward
   * used) with its weights: each expert keeps {@link TokenDropping#capacity} tokens by the drop policy, ties
   * to the lower token index. Rows must hold k distinct experts in range; weights may be NaN (they rank
   * below every number under PROBS).
   *
   * @param drop the capacity factor, policy and padding rule
   * @param idx the selection [tokens, k]
   * @param weights its weights [tokens, k] (scale included); required under {@link DropPolicy#PROBS} or with
   *     outProbs, else may be null
   * @param tokens T, the rows, {@code >= 0}
   * @param outMap receives the final routing map [tokens, E] (with {@code padToCapacity} the keep mask
   *     itself, padding slots included); null to skip
   * @param outProbs receives the weights on the final map [tokens, E] (0 elsewhere and on padding slots);
   *     null to skip
   * @param outKept receives [tokens, k] 1 where the entry is kept, else 0 (for
   *     {@link TokenDropping#maskDropped} before {@link #backward}); null to skip
   * @param outKeptCounts receives the routed entries kept per expert [E]; null to skip
   * @return the number of routed entries dropped
   * @throws MoeRouterException {@link Status#INVALID_REPLAY} naming the first row of idx out of range or
   *     repeated; {@link Status#INVALID_ARGUMENT} for a negative tokens or a short or null array;
   *     {@link Status#UNSUPPORTED} above 2^31 map elements; nothing is written then
   * @throws NullPointerException when drop is null
   * @throws IllegalStateException when the router is closed
   */
  public final long dropTokens(TokenDropping drop, int[] idx, float[] weights, int tokens, byte[] outMap,
      float[] outProbs, byte[] outKept, int[] outKeptCounts) {
    acquire("dropTokens");
    try {
      Objects.requireNonNull(drop, "drop");
      checkTokens(tokens);
      final int k = config.topK(), e = config.experts();
      long tk = (long) tokens * k, te = (long) tokens * e;
      checkCapacity("idx", idx == null ? -1 : idx.length, tk);
      if (drop.policy() == DropPolicy.PROBS || outProbs != null)
        checkCapacity("weights", weights == null ? -1 : weights.length, tk);
      else if (weights != null) checkCapacity("weights", weights.length, tk);
      if (outMap != null) checkCapacity("outMap", outMap.length, te);
      if (outProbs != null) checkCapacity("outProbs", outProbs.length, te);
      if (outKept != null) checkCapacity("outKept", outKept.length, tk);
      if (outKeptCounts != null) checkCapacity("outKeptCounts", outKeptCounts.length, e);
      if (te > Integer.MAX_VALUE - 8) throw new MoeRouterException(Status.UNSUPPORTED, "dropTokens: more than 2^31 map elements");
      return dropArrays(drop, idx, weights, tokens, outMap, outProbs, outKept, outKeptCounts);
    } finally {
      release();
    }
  }

  // ------------------------------------------------------------------ section 6 on device pointers

  /**
   * CUDA only: {@link #validTokens(float[], int, byte[], byte[])} over device pointers, enqueued on
   * {@code stream} (a cudaStream_t; 0 for the default stream) without synchronising.
   *
   * @param logits device logits [tokens, E] of {@code type}; read only under {@link NonFinitePolicy#ZERO}
   *     (may be 0 otherwise)
   * @param type the logits' element type
   * @param tokens rows
   * @param paddingMask device uint8 [tokens], 1 = padding (Megatron's convention), or 0 for none
   * @param outValid device uint8 [tokens]: 1 where the row is valid
   * @param outCount device int64 receiving N, the valid rows, or 0
   * @param stream the cudaStream_t to enqueue on
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a JAVA or CPU router, or an argument error
   */
  public final void validTokensDevice(long logits, LogitsType type, long tokens, long paddingMask, long outValid,
      long outCount, long stream) {
    acquire("validTokensDevice");
    try {
      Objects.requireNonNull(type, "type");
      checkDeviceTokens(tokens);
      validTokensDeviceImpl(logits, type, tokens, paddingMask, outValid, outCount, stream);
    } finally {
      release();
    }
  }

  /**
   * CUDA only: tokens per expert over the valid rows of a selection, over device pointers, on {@code stream}
   * without synchronising ({@link #tokensPerExpert(int[], int, byte[], int[])}). Rows must hold k distinct
   * experts in range: an invalid row is rejected on the device (nothing written) and reported by the next
   * {@link #checkReplay()}.
   *
   * @param idx device int32 [tokens, k]
   * @param validRows device uint8 [tokens] ({@link #validTokensDevice}), or 0 for every row
   * @param tokens rows
   * @param outCounts device int32 [E], overwritten
   * @param stream the cudaStream_t to enqueue on
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a JAVA or CPU router, or an argument error
   */
  public final void tokensPerExpertDevice(long idx, long validRows, long tokens, long outCounts, long stream) {
    acquire("tokensPerExpertDevice");
    try {
      checkDeviceTokens(tokens);
      tokensPerExpertDeviceImpl(idx, 0L, validRows, tokens, outCounts, stream);
    } finally {
      release();
    }
  }

  /**
   * CUDA only: column sums of a routing map (the final map of {@link #dropTokensDevice}) over the valid
   * rows, over device pointers, on {@code stream} without synchronising
   * ({@link #tokensPerExpert(byte[], int, byte[], int[])}).
   *
   * @param map device uint8 [tokens, E], nonzero where routed
   * @param validRows device uint8 [tokens], or 0 for every row
   * @param tokens rows
   * @param outCounts device int32 [E], overwritten
   * @param stream the cudaStream_t to enqueue on
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a JAVA or CPU router, or an argument error
   */
  public final void tokensPerExpertMapDevice(long map, long validRows, long tokens, long outCounts, long stream) {
    acquire("tokensPerExpertMapDevice");
    try {
      checkDeviceTokens(tokens);
      if (tokens > 0 && map == 0) throw invalid("map must not be 0");
      tokensPerExpertDeviceImpl(0L, map, validRows, tokens, outCounts, stream);
    } finally {
      release();
    }
  }

  /**
   * CUDA only: the device workspace {@link #lossesDevice} needs for {@code tokens} rows and {@code losses}.
   *
   * @param tokens rows
   * @param losses the losses the call computes
   * @param auxOutputs whether the call asks for the aux counts, scores or map
   * @return bytes (allocate them 16-byte aligned; cudaMalloc is)
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a JAVA or CPU router, or an argument error
   */
  public final long lossesWorkspaceBytes(long tokens, LossConfig losses, boolean auxOutputs) {
    acquire("lossesWorkspaceBytes");
    try {
      Objects.requireNonNull(losses, "losses");
      checkDeviceTokens(tokens);
      return workspaceBytesImpl(0, tokens, losses, auxOutputs, DropPolicy.PROBS);
    } finally {
      release();
    }
  }

  /**
   * CUDA only: {@link #losses(float[], int, byte[], LossConfig, double[], double, float[], LossValues)} over
   * device pointers, on {@code stream} without synchronising, the same values and gradients bit for bit.
   * {@code outValues} receives the C struct moe_loss_values: the aux, seq aux, global aux and z losses as
   * four doubles, then N as an int64 (40 bytes). G is not read by the host, so its values are not checked:
   * keep them finite and {@code >= 0}.
   *
   * @param logits device logits [tokens, E] of {@code type}
   * @param type the logits' element type
   * @param tokens rows
   * @param validRows device uint8 [tokens], or 0 for every row
   * @param losses the losses to compute (coefficient 0 = off)
   * @param globalTokensPerExpert device float64 G [E] (read with the global aux loss only, else may be 0)
   * @param globalNumTokens Ng
   * @param outValues device moe_loss_values (40 bytes)
   * @param outAuxCounts device int32 [E] (the aux map's counts over valid rows), or 0
   * @param outAuxScores device float [tokens, E] (aux scores, 0 on invalid rows), or 0
   * @param outAuxMap device uint8 [tokens, E] (the plain top-k map, 0 on invalid rows), or 0
   * @param gradLogits device float [tokens, E] the gradient is ADDED to, or 0
   * @param workspace device memory of {@link #lossesWorkspaceBytes} bytes, 16-byte aligned
   * @param workspaceBytes its size
   * @param stream the cudaStream_t to enqueue on
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a JAVA or CPU router, or an argument error
   */
  public final void lossesDevice(long logits, LogitsType type, long tokens, long validRows, LossConfig losses,
      long globalTokensPerExpert, double globalNumTokens, long outValues, long outAuxCounts, long outAuxScores,
      long outAuxMap, long gradLogits, long workspace, long workspaceBytes, long stream) {
    acquire("lossesDevice");
    try {
      Objects.requireNonNull(type, "type");
      Objects.requireNonNull(losses, "losses");
      checkDeviceTokens(tokens);
      if (losses.globalAuxCoeff() > 0f) {
        if (globalTokensPerExpert == 0) throw invalid("global aux loss needs the global tokens per expert (G [experts])");
        if (!(globalNumTokens >= 0) || !Double.isFinite(globalNumTokens))
          throw invalid("global num tokens must be finite and >= 0, got " + RouterConfig.Builder.gFormat(globalNumTokens));
      }
      lossesDeviceImpl(logits, type, tokens, validRows, losses, globalTokensPerExpert, globalNumTokens, outValues,
          outAuxCounts, outAuxScores, outAuxMap, gradLogits, workspace, workspaceBytes, stream);
    } finally {
      release();
    }
  }

  /**
   * CUDA only: the device workspace {@link #dropTokensDevice} needs.
   *
   * @param tokens rows
   * @param policy the drop policy of the call
   * @return bytes (allocate them 16-byte aligned; cudaMalloc is)
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a JAVA or CPU router, or an argument error
   */
  public final long dropTokensWorkspaceBytes(long tokens, DropPolicy policy) {
    acquire("dropTokensWorkspaceBytes");
    try {
      Objects.requireNonNull(policy, "policy");
      checkDeviceTokens(tokens);
      return workspaceBytesImpl(1, tokens, null, false, policy);
    } finally {
      release();
    }
  }

  /**
   * CUDA only: {@link #dropTokens(TokenDropping, int[], float[], int, byte[], float[], byte[], int[])} over
   * device pointers, on {@code stream} without synchronising, the same decisions. Rows must hold k distinct
   * experts in range: an invalid row is rejected on the device (nothing written) and reported by the next
   * {@link #checkReplay()}.
   *
   * @param drop capacity factor, policy and padding
   * @param idx device int32 [tokens, k]
   * @param weights device float [tokens, k] (the routing weights, scale included); may be 0 for the position
   *     policy without {@code outProbs}
   * @param tokens rows
   * @param outMap device uint8 [tokens, E] the final map, or 0
   * @param outProbs device float [tokens, E] the weights on the final map, or 0
   * @param outKept device uint8 [tokens, k] 1 where the entry is kept, or 0
   * @param outKeptCounts device int32 [E] routed entries kept, or 0
   * @param outDropped device int64 receiving the routed entries dropped, or 0
   * @param workspace device memory of {@link #dropTokensWorkspaceBytes} bytes, 16-byte aligned
   * @param workspaceBytes its size
   * @param stream the cudaStream_t to enqueue on
   * @throws MoeRouterException {@link Status#UNSUPPORTED} on a JAVA or CPU router, or an argument error
   */
  public final void dropTokensDevice(TokenDropping drop, long idx, long weights, long tokens, long outMap,
      long outProbs, long outKept, long outKeptCounts, long outDropped, long workspace, long workspaceBytes,
      long stream) {
    acquire("dropTokensDevice");
    try {
      Objects.requireNonNull(drop, "drop");
      checkDeviceTokens(tokens);
      dropTokensDeviceImpl(drop, idx, weights, tokens, outMap, outProbs, outKept, outKeptCounts, outDropped,
          workspace, workspaceBytes, stream);
    } finally {
      release();
    }
  }

  private static void checkDeviceTokens(long tokens) {
    if (tokens < 0) throw invalid("tokens must be >= 0, got " + tokens);
  }

  private MoeRouterException noDevice() {
    return new MoeRouterException(Status.UNSUPPORTED, "device pointers need the CUDA backend (this router: " + backend + ")");
  }

  void validTokensDeviceImpl(long logits, LogitsType type, long tokens, long padding, long outValid, long outCount,
      long stream) {
    throw noDevice();
  }

  void tokensPerExpertDeviceImpl(long idx, long map, long valid, long tokens, long outCounts, long stream) {
    throw noDevice();
  }

  long workspaceBytesImpl(int kind, long tokens, LossConfig losses, boolean auxOutputs, DropPolicy policy) {
    throw noDevice();
  }

  void lossesDeviceImpl(long logits, LogitsType type, long tokens, long valid, LossConfig losses, long global,
      double globalNumTokens, long outValues, long outCounts, long outScores, long outMap, long grad, long workspace,
      long workspaceBytes, long stream) {
    throw noDevice();
  }

  void dropTokensDeviceImpl(TokenDropping drop, long idx, long weights, long tokens, long outMap, long outProbs,
      long outKept, long outKeptCounts, long outDropped, long workspace, long workspaceBytes, long stream) {
    throw noDevice();
  }

  // Section 6 hooks: the Java reference here, native routers override (CUDA ones run them on the host).
  long validTokensArrays(float[] f32, short[] half, LogitsType type, int tokens, byte[] padding, byte[] out) {
    return JavaTraining.validTokens(config, f32, half, type, tokens, padding, out);
  }

  void lossesArrays(float[] f32, short[] half, LogitsType type, int tokens, byte[] valid, LossConfig losses,
      double[] globalTokens, double globalNumTokens, LossValues out, float[] scores, byte[] map, float[] grad) {
    JavaTraining.losses(config, f32, half, type, tokens, valid, losses, globalTokens, globalNumTokens, out, scores, map,
        grad);
  }

  long dropArrays(TokenDropping drop, int[] idx, float[] w, int tokens, byte[] map, float[] probs, byte[] kept,
      int[] keptCounts) {
    int k = config.topK(), e = config.experts();
    for (int t = 0; t < tokens; t++)
      if (JavaRouting.checkReplayRow(idx, t * k, k, e) != JavaRouting.REPLAY_OK)
        throw new MoeRouterException(Status.INVALID_REPLAY, "dropTokens failed: " + Status.INVALID_REPLAY.description()
            + ": " + JavaRouting.replayRowMessage(t, idx, t * k, k, e));
    return JavaTraining.dropTokens(config, drop, idx, w, tokens, map, probs, kept, keptCounts);
  }

  /**
   * Aux-loss-free balancing step (DeepSeek-V3; docs/semantics.md section 6):
   * {@code b_i += rate * sign(mean(tokens) - tokens_i)}, applied to this router. A router built without a
   * bias starts from zeros, and ranks by R = score + bias from then on. Serialised with the other bias
   * methods; routing calls on other threads use the bias from before or from after the step, never a mix
   * (see {@link #setExpertBias}).
   *
   * @param tokensPerExpert counts [E], {@code >= 0}: {@link #tokensPerExpert(int[], int, byte[], int[])} over
   *     the valid rows, summed over the ranks
   * @param rate the update rate (DeepSeek-V3's gamma), finite
   * @return a copy of the new bias [E]
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a softmax post router (it takes no bias),
   *     a short or null array, a negative count or a non-finite rate; the bias is unchanged then
   * @throws IllegalStateException when the router is closed
   */
  public final float[] updateExpertBias(int[] tokensPerExpert, float rate) {
    acquire("updateExpertBias");
    try {
      synchronized (biasLock) {
        return updateBias(tokensPerExpert, rate);
      }
    } finally {
      release();
    }
  }

  private float[] updateBias(int[] tokensPerExpert, float rate) {
    if (!config.acceptsExpertBias()) throw invalid(BIAS_NEEDS_SCORE);
    int e = config.experts();
    checkCapacity("tokensPerExpert", tokensPerExpert == null ? -1 : tokensPerExpert.length, e);
    if (!Float.isFinite(rate)) throw invalid("bias update rate is not finite: " + rate);
    double mean = 0;
    for (int i = 0; i < e; i++) {
      if (tokensPerExpert[i] < 0) throw invalid("tokensPerExpert[" + i + "] is negative");
      mean += tokensPerExpert[i];
    }
    mean /= e;
    float[] next = currentBias();
    for (int i = 0; i < e; i++) next[i] += rate * (float) Math.signum(mean - tokensPerExpert[i]);
    replaceBias(next);
    return next.clone();
  }

  // ------------------------------------------------------------------ state

  private float[] expertBias;  // a copy; null when none. Guarded by biasLock
  /**
   * Serialises the bias methods with each other (read-modify-write of updateExpertBias); not {@code this},
   * which the Java backend's routing calls hold, so that a bias change never waits for a routing call.
   */
  private final Object biasLock = new Object();

  /**
   * The expert bias currently used for selection (after {@link #setExpertBias} and
   * {@link #updateExpertBias}, unlike {@code config().expertBias()}).
   *
   * @return a copy [E]; zeros for a router built without a bias that accepts one (sigmoid, sqrtsoftplus,
   *     softmax pre)
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a softmax post router
   * @throws IllegalStateException when the router is closed
   */
  public final float[] expertBias() {
    acquire("expertBias");
    try {
      synchronized (biasLock) {
        return currentBias();
      }
    } finally {
      release();
    }
  }

  private float[] currentBias() {
    if (expertBias != null) return expertBias.clone();
    if (!config.acceptsExpertBias()) throw invalid("softmax post routers have no expert bias");
    return new float[config.experts()];
  }

  /**
   * Replaces the expert bias (sigmoid, sqrtsoftplus or softmax pre routers), for example after a balancing
   * step computed elsewhere. A router built without a bias ranks by R = score + bias once one is set.
   *
   * <p>Threads: safe while other threads route on this router. Every routing call uses exactly one bias
   * version for all its rows, the one current when the call started: a call in flight finishes with the
   * old bias (never a mix of old and new entries), and every call that starts after this method returned
   * uses the new one. Bias changes are serialised with each other. On the Java and CPU backends the change
   * does not wait for the calls in flight (they hold their version until they end). A CUDA router keeps one
   * bias buffer on the device, so the change waits until the calls already running or enqueued on the
   * router have finished; CUDA graph launches are the caller's to order against it, and a graph captured
   * before the first bias was given to a router created without one keeps ranking by logit (capture it
   * again).
   *
   * @param bias the new bias [E], every entry finite; copied
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a softmax post router, a null array, a
   *     length other than E or a non-finite entry; the bias is unchanged then
   * @throws IllegalStateException when the router is closed
   */
  public final void setExpertBias(float[] bias) {
    acquire("setExpertBias");
    try {
      synchronized (biasLock) {
        replaceBias(bias);
      }
    } finally {
      release();
    }
  }

  private void replaceBias(float[] bias) {
    checkBias(bias);
    applyExpertBias(bias);
    expertBias = bias.clone();
  }

  abstract void applyExpertBias(float[] bias);

  /** Whether the trivial host helpers (counts, dense views) go through the native library. */
  boolean nativeHelpers() {
    return false;
  }

  // ------------------------------------------------------------------ lifetime

  /**
   * 2 x (calls in flight) + CLOSED once close() ran: zstd-jni's AutoCloseBase use counter, except that
   * close() during calls does not fail but leaves the free to the last call out. Once CLOSED is set the
   * count only goes down, so exactly one thread sees the word become CLOSED and frees.
   */
  private volatile int state;

  private static final int CLOSED = 1;
  private static final int CALL = 2;
  private static final VarHandle STATE;

  static {
    try {
      STATE = MethodHandles.lookup().findVarHandle(MoeRouter.class, "state", int.class);
    } catch (ReflectiveOperationException e) {
      throw new ExceptionInInitializerError(e);
    }
  }

  /** Counts a call in; throws IllegalStateException once the router is closed. */
  final void acquire(String operation) {
    int s = state;
    if ((s & CLOSED) != 0 || !STATE.compareAndSet(this, s, s + CALL)) acquireContended(operation);
  }

  private void acquireContended(String operation) {
    for (;;) {
      int s = state;
      if ((s & CLOSED) != 0) throw new IllegalStateException(operation + " failed: the router is closed (" + this + ")");
      if (STATE.compareAndSet(this, s, s + CALL)) return;
    }
  }

  /**
   * Counts a call out. Its read-modify-write of {@code this} also keeps the router strongly reachable
   * until the native call has returned, so a Cleaner cannot run under it.
   */
  final void release() {
    if ((int) STATE.getAndAdd(this, -CALL) == CALL + CLOSED) freeResources();
  }

  /**
   * Whether {@link #close()} was called.
   *
   * @return true once close() ran (calls already inside may still be finishing)
   */
  public final boolean isClosed() {
    return (state & CLOSED) != 0;
  }

  /**
   * Releases the router; idempotent, and safe while other threads are inside calls: those complete
   * normally and the native resources are freed when the last of them returns. Every later call
   * (routing, replay, backward, losses, helpers, bias) throws {@link IllegalStateException};
   * {@link #config()}, {@link #backend()} and {@link #isClosed()} keep working.
   */
  @Override
  public final void close() {
    if ((int) STATE.getAndBitwiseOr(this, CLOSED) == 0) freeResources();
  }

  /** Frees what the backend owns; runs exactly once, with no call in flight. */
  abstract void freeResources();

  // ------------------------------------------------------------------ backend hooks

  void routeDeviceImpl(long logits, LogitsType type, long tokens, long replayIdx, long replayMask, long outIdx,
      long outWeights, long outFlags, long nonfiniteRows, long stream) {
    throw new MoeRouterException(Status.UNSUPPORTED, "device pointers need the CUDA backend (this router: " + backend + ")");
  }

  void checkReplayImpl() {}

  void backwardDeviceImpl(long logits, LogitsType type, long tokens, long idx, long gradWeights, long flags,
      long gradLogits, long stream) {
    throw new MoeRouterException(Status.UNSUPPORTED, "device pointers need the CUDA backend (this router: " + backend + ")");
  }

  abstract long routeArrays(float[] f32, short[] half, LogitsType type, int tokens, int[] replayIdx,
      byte[] replayMask, int[] outIdx, float[] outWeights, byte[] outFlags);

  /** Direct buffers, already checked (direct, large enough, outputs writable); read from their positions. */
  abstract long routeBuffers(Buffer logits, LogitsType type, int tokens, IntBuffer replayIdx, ByteBuffer replayMask,
      IntBuffer outIdx, FloatBuffer outWeights, ByteBuffer outFlags);

  abstract long routeHost(long logits, LogitsType type, long tokens, long replayIdx, long replayMask, long outIdx,
      long outWeights, long outFlags);

  abstract void backwardArrays(float[] f32, short[] half, LogitsType type, int tokens, int[] idx, float[] gradWeights,
      byte[] flags, float[] gradLogits);

  abstract void backwardHost(long logits, LogitsType type, long tokens, long idx, long gradWeights, long flags,
      long gradLogits);

  // ------------------------------------------------------------------ argument checks

  static final String BIAS_NEEDS_SCORE = "expert bias with the softmax score function needs pre-softmax (R = P + b)";

  void checkBias(float[] bias) {
    if (!config.acceptsExpertBias()) throw invalid(BIAS_NEEDS_SCORE);
    if (bias == null || bias.length != config.experts())
      throw invalid("expert bias must have " + config.experts() + " entries");
    for (int i = 0; i < bias.length; i++) if (!Float.isFinite(bias[i])) throw invalid("expert bias[" + i + "] is not finite");
  }

  private void checkArrays(int logitsLength, int tokens, int[] replayIdx, byte[] replayMask, int[] outIdx,
      float[] outWeights, byte[] outFlags) {
    checkTokens(tokens);
    if (outFlags != null) checkCapacity("outNonfiniteRows", outFlags.length, tokens);
    long tk = (long) tokens * config.topK();
    checkCapacity("logits", logitsLength, (long) tokens * config.experts());
    checkCapacity("outIdx", outIdx == null ? -1 : outIdx.length, tk);
    checkCapacity("outWeights", outWeights == null ? -1 : outWeights.length, tk);
    if (replayIdx != null) checkCapacity("replayIdx", replayIdx.length, tk);
    if (replayMask != null) checkCapacity("replayMask", replayMask.length, tokens);
  }

  private void checkBackward(int logitsLength, int tokens, int[] idx, float[] gradWeights, byte[] flags,
      float[] gradLogits) {
    checkTokens(tokens);
    long tk = (long) tokens * config.topK();
    checkCapacity("logits", logitsLength, (long) tokens * config.experts());
    checkCapacity("idx", idx == null ? -1 : idx.length, tk);
    checkCapacity("gradWeights", gradWeights == null ? -1 : gradWeights.length, tk);
    checkCapacity("gradLogits", gradLogits == null ? -1 : gradLogits.length, (long) tokens * config.experts());
    if (flags != null) checkCapacity("nonfiniteRows", flags.length, tokens);
    else if (tokens > 0) checkZeroFlags();
  }

  /** The native check_backward_args rule, with its text. */
  private void checkZeroFlags() {
    if (config.nonFinite() == NonFinitePolicy.ZERO)
      throw invalid("non-finite policy ZERO: backward needs the forward's non-finite row flags (a live row read its "
          + "whole row, which the indices alone do not tell)");
  }

  private void checkLoss(int logitsLength, int tokens, float[] scores, byte[] map, int[] counts, float[] grad) {
    checkTokens(tokens);
    long te = (long) tokens * config.experts();
    checkCapacity("logits", logitsLength, te);
    if (scores != null) checkCapacity("outScores", scores.length, te);
    if (map != null) checkCapacity("outTopkMap", map.length, te);
    if (counts != null) checkCapacity("outCounts", counts.length, config.experts());
    if (grad != null) checkCapacity("gradLogits", grad.length, te);
  }

  private void checkValid(int logitsLength, int tokens, byte[] padding, byte[] out) {
    checkTokens(tokens);
    if (config.nonFinite() == NonFinitePolicy.ZERO) checkCapacity("logits", logitsLength, (long) tokens * config.experts());
    else if (logitsLength >= 0) checkCapacity("logits", logitsLength, (long) tokens * config.experts());
    if (padding != null) checkCapacity("paddingMask", padding.length, tokens);
    checkCapacity("outValid", out == null ? -1 : out.length, tokens);
  }

  /** The moe_losses_host rules with their texts (the config's own rules were checked when it was built). */
  private void checkLosses(int logitsLength, int tokens, byte[] valid, LossConfig losses, double[] global,
      double globalNumTokens, float[] grad, LossValues out) {
    Objects.requireNonNull(losses, "losses");
    Objects.requireNonNull(out, "out");
    checkTokens(tokens);
    int e = config.experts();
    long te = (long) tokens * e;
    checkCapacity("logits", logitsLength, te);
    if (valid != null) checkCapacity("validRows", valid.length, tokens);
    if (grad != null) checkCapacity("gradLogits", grad.length, te);
    if (out.experts() != e) throw invalid("out holds values for " + out.experts() + " experts, the router has " + e);
    if (losses.seqAuxCoeff() > 0f && tokens % losses.seqLength() != 0)
      throw invalid("seq aux loss: tokens (" + tokens + ") must be a multiple of the seq length (" + losses.seqLength()
          + "): tokens = seq length * batch");
    if (losses.globalAuxCoeff() > 0f) {
      if (global == null) throw invalid("global aux loss needs the global tokens per expert (G [experts])");
      checkCapacity("globalTokensPerExpert", global.length, e);
      for (int i = 0; i < e; i++)
        if (!(global[i] >= 0) || !Double.isFinite(global[i]))
          throw invalid("global tokens per expert[" + i + "] must be finite and >= 0, got "
              + RouterConfig.Builder.gFormat(global[i]));
      if (!(globalNumTokens >= 0) || !Double.isFinite(globalNumTokens))
        throw invalid("global num tokens must be finite and >= 0, got " + RouterConfig.Builder.gFormat(globalNumTokens));
    }
    if (te > Integer.MAX_VALUE - 8 && backend == Backend.JAVA)
      throw new MoeRouterException(Status.UNSUPPORTED, "the Java backend handles at most 2^31 logits per call");
  }

  static void checkTokens(int tokens) {
    if (tokens < 0) throw invalid("tokens must be >= 0, got " + tokens);
  }

  private static void checkHalf(LogitsType type) {
    if (type != LogitsType.BF16 && type != LogitsType.FP16)
      throw invalid("short[] logits must be BF16 or FP16, got " + type);
  }

  static void checkCapacity(String name, long have, long need) {
    if (have < 0) throw invalid(name + " must not be null");
    if (have < need) throw invalid(name + " holds " + have + " elements, needs " + need);
  }

  static MoeRouterException invalid(String message) {
    return new MoeRouterException(Status.INVALID_ARGUMENT, message);
  }

  @Override
  public String toString() {
    return getClass().getSimpleName() + "{" + backend + ", " + config + "}";
  }
}
