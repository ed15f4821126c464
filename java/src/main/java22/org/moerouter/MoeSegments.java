// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.lang.foreign.MemorySegment;
import java.lang.ref.Reference;
import java.nio.ByteOrder;
import java.util.Objects;

/**
 * {@link MoeRouter} over {@link MemorySegment}s (JDK 22+; this class is in the multi-release part of the
 * jar and absent on JDK 17-21): route, replay and backward on tensors that Java engines keep in native
 * memory, without copies. Shapes are those of the array overloads: logits [tokens, E] of {@code type},
 * indices [tokens, k] int32, weights [tokens, k] fp32, replay mask [tokens] bytes, gradients fp32.
 *
 * <pre>{@code
 * try (Arena arena = Arena.ofConfined(); MoeRouter router = MoeRouter.create(config)) {
 *   MemorySegment logits = arena.allocate(ValueLayout.JAVA_SHORT, tokens * experts);   // bf16, filled by the engine
 *   MemorySegment idx = arena.allocate(ValueLayout.JAVA_INT, tokens * k);
 *   MemorySegment w = arena.allocate(ValueLayout.JAVA_FLOAT, tokens * k);
 *   MoeSegments.route(router, logits, LogitsType.BF16, tokens, idx, w);
 * }
 * }</pre>
 *
 * <p>Before anything is read or written, each call checks, naming the operation, the argument and the value:
 * <ul>
 *   <li>native memory: heap segments are rejected (use the {@code float[]}/{@code short[]} overloads);
 *   <li>liveness: the segment's arena is open and this thread may access it (a confined arena of another
 *       thread is rejected);
 *   <li>size: at least the bytes the shape needs (sizes in bytes, overflow-checked);
 *   <li>alignment: each address is a multiple of its element size, as the C ABI's types require;
 *   <li>byte order: values are read in the platform's order, which must be little-endian (the order of the
 *       C ABI here and of safetensors trace files). A segment carries no byte order, so data written as
 *       big-endian cannot be detected; write with the plain {@code ValueLayout.JAVA_*} layouts;
 *   <li>overlap: outputs overlap no input and no other output ({@code replayIdx} may be {@code outIdx}
 *       itself, for in-place replay).
 * </ul>
 *
 * <p>The calls then take the raw-address path ({@link MoeRouter#routeAddress}, {@link
 * MoeRouter#backwardAddress}); the segments stay reachable until the call returns, so memory of an
 * automatic arena cannot be freed under it. Closing a shared arena from another thread while a call
 * uses its segments is a race the caller must avoid, as with any memory freed during use.
 *
 * <p>Traps: these forms write no per-row non-finite flags, so a {@link NonFinitePolicy#ZERO} router's
 * backward cannot run here (pass {@code segment.address()} to the {@code routeAddress} and
 * {@code backwardAddress} overloads that take flags); and the checks are per call, so a segment is only
 * known to be valid for the call that checked it.
 */
public final class MoeSegments {
  private MoeSegments() {}

  /**
   * Live routing over segments, as {@link MoeRouter#route(float[], int, int[], float[])}.
   *
   * @param router an open router on any backend (the Java one copies through the memory)
   * @param logits native segment of logits [tokens, E] of {@code type}, aligned to its element size
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param outIdx native segment receiving the int32 indices [tokens, k], 4-byte aligned
   * @param outWeights native segment receiving the fp32 weights [tokens, k], 4-byte aligned
   * @return the number of rows in which a logit that was read is NaN or infinite
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} naming the argument that fails a check of the
   *     class comment (nothing read or written); {@link Status#NONFINITE} under
   *     {@link NonFinitePolicy#ERROR}; {@link Status#UNSUPPORTED} on a big-endian platform
   * @throws NullPointerException when router or type is null
   * @throws IllegalStateException when the router is closed
   */
  public static long route(MoeRouter router, MemorySegment logits, LogitsType type, long tokens, MemorySegment outIdx,
      MemorySegment outWeights) {
    return routeChecked("route", router, logits, type, tokens, null, null, outIdx, outWeights);
  }

  /**
   * Replay over segments (docs/semantics.md section 4): the experts of {@code replayIdx} in their order,
   * weights from the live logits. Invalid rows are rejected before any output is written.
   *
   * @param router an open router on any backend
   * @param logits native segment of logits [tokens, E] of {@code type}, aligned to its element size
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param replayIdx native segment of the int32 experts to replay [tokens, k]; may be outIdx itself
   *     (in-place replay)
   * @param replayMask native segment of the uint8 mask [tokens], or null: rows with mask 0 are routed live
   * @param outIdx native segment receiving the int32 indices used [tokens, k]
   * @param outWeights native segment receiving the fp32 weights [tokens, k]
   * @return the number of rows in which a logit that was read is NaN or infinite
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} naming the argument that fails a check of the
   *     class comment (replayIdx null included); {@link Status#INVALID_REPLAY} naming the first invalid row;
   *     {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is written in any case
   * @throws NullPointerException when router or type is null
   * @throws IllegalStateException when the router is closed
   */
  public static long replay(MoeRouter router, MemorySegment logits, LogitsType type, long tokens,
      MemorySegment replayIdx, MemorySegment replayMask, MemorySegment outIdx, MemorySegment outWeights) {
    if (replayIdx == null) throw invalid("replay: replayIdx must not be null");
    return routeChecked("replay", router, logits, type, tokens, replayIdx, replayMask, outIdx, outWeights);
  }

  /**
   * Backward of the weights over segments (docs/semantics.md section 5): gradLogits [tokens, E] from
   * gradWeights [tokens, k] for the experts idx [tokens, k] the forward used. Every element of gradLogits is
   * written. No non-finite row flags: routers with {@link NonFinitePolicy#ZERO} are rejected (use
   * {@link MoeRouter#backwardAddress(long, LogitsType, long, long, long, long, long)} with the flags).
   *
   * @param router an open router on any backend
   * @param logits native segment of the forward's logits [tokens, E] of {@code type}
   * @param type the element type of logits
   * @param tokens T, the rows, {@code >= 0}
   * @param idx native segment of the forward's int32 indices [tokens, k] (never -1)
   * @param gradWeights native segment of the fp32 upstream gradient [tokens, k]
   * @param gradLogits native segment receiving the fp32 gradient [tokens, E]; overlaps no input
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} naming the argument that fails a check of the
   *     class comment, and for a ZERO router; {@link Status#INVALID_REPLAY} naming the first invalid row of
   *     idx; {@link Status#NONFINITE} under {@link NonFinitePolicy#ERROR}; nothing is written then
   * @throws NullPointerException when router or type is null
   * @throws IllegalStateException when the router is closed
   */
  public static void backward(MoeRouter router, MemorySegment logits, LogitsType type, long tokens, MemorySegment idx,
      MemorySegment gradWeights, MemorySegment gradLogits) {
    final String op = "backward";
    Shape s = new Shape(op, router, type, tokens);
    long logitBytes = s.bytes(s.experts, type.bytes(), "logits");
    long tkBytes = s.bytes(s.topK, 4, "idx");
    long gradBytes = s.bytes(s.experts, 4, "gradLogits");
    MemorySegment l = check(op, "logits", logits, logitBytes, type.bytes());
    MemorySegment i = check(op, "idx", idx, tkBytes, 4);
    MemorySegment gw = check(op, "gradWeights", gradWeights, tkBytes, 4);
    MemorySegment gl = check(op, "gradLogits", gradLogits, gradBytes, 4);
    disjoint(op, "gradLogits", gl, "logits", l);
    disjoint(op, "gradLogits", gl, "idx", i);
    disjoint(op, "gradLogits", gl, "gradWeights", gw);
    try {
      router.backwardAddress(logits.address(), type, tokens, idx.address(), gradWeights.address(), gradLogits.address());
    } finally {
      Reference.reachabilityFence(logits);
      Reference.reachabilityFence(idx);
      Reference.reachabilityFence(gradWeights);
      Reference.reachabilityFence(gradLogits);
    }
  }

  private static long routeChecked(String op, MoeRouter router, MemorySegment logits, LogitsType type, long tokens,
      MemorySegment replayIdx, MemorySegment replayMask, MemorySegment outIdx, MemorySegment outWeights) {
    Shape s = new Shape(op, router, type, tokens);
    long logitBytes = s.bytes(s.experts, type.bytes(), "logits");
    long tkBytes = s.bytes(s.topK, 4, "outIdx");
    MemorySegment l = check(op, "logits", logits, logitBytes, type.bytes());
    MemorySegment oi = check(op, "outIdx", outIdx, tkBytes, 4);
    MemorySegment ow = check(op, "outWeights", outWeights, tkBytes, 4);
    MemorySegment ri = replayIdx == null ? null : check(op, "replayIdx", replayIdx, tkBytes, 4);
    MemorySegment rm = replayMask == null ? null : check(op, "replayMask", replayMask, tokens, 1);
    disjoint(op, "outIdx", oi, "logits", l);
    disjoint(op, "outWeights", ow, "logits", l);
    disjoint(op, "outWeights", ow, "outIdx", oi);
    if (ri != null) {
      disjoint(op, "outWeights", ow, "replayIdx", ri);
      if (ri.address() != oi.address()) disjoint(op, "outIdx", oi, "replayIdx", ri);
    }
    if (rm != null) {
      disjoint(op, "outIdx", oi, "replayMask", rm);
      disjoint(op, "outWeights", ow, "replayMask", rm);
    }
    try {
      return router.routeAddress(logits.address(), type, tokens, ri == null ? 0 : replayIdx.address(),
          rm == null ? 0 : replayMask.address(), outIdx.address(), outWeights.address());
    } finally {
      Reference.reachabilityFence(logits);
      Reference.reachabilityFence(replayIdx);
      Reference.reachabilityFence(replayMask);
      Reference.reachabilityFence(outIdx);
      Reference.reachabilityFence(outWeights);
    }
  }

  /** Validated scalars of one call. */
  private static final class Shape {
    final String op;
    final long tokens;
    final int experts;
    final int topK;

    Shape(String op, MoeRouter router, LogitsType type, long tokens) {
      Objects.requireNonNull(router, op + ": router must not be null");
      Objects.requireNonNull(type, op + ": type must not be null");
      if (tokens < 0) throw invalid(op + ": tokens must be >= 0, got " + tokens);
      if (ByteOrder.nativeOrder() != ByteOrder.LITTLE_ENDIAN)
        throw new MoeRouterException(Status.UNSUPPORTED, op + ": segments are read as little-endian values, but this"
            + " platform is " + ByteOrder.nativeOrder());
      this.op = op;
      this.tokens = tokens;
      this.experts = router.config().experts();
      this.topK = router.config().topK();
    }

    /** tokens x perToken x elementBytes, or an error naming the argument when it overflows a long. */
    long bytes(int perToken, int elementBytes, String name) {
      try {
        return Math.multiplyExact(Math.multiplyExact(tokens, perToken), elementBytes);
      } catch (ArithmeticException e) {
        throw invalid(op + ": " + name + " size overflows: tokens=" + tokens + " x " + perToken + " x " + elementBytes + " bytes");
      }
    }
  }

  /** The first {@code need} bytes of {@code seg}, after the native-memory, liveness, size and alignment checks. */
  private static MemorySegment check(String op, String name, MemorySegment seg, long need, int align) {
    if (seg == null) throw invalid(op + ": " + name + " must not be null");
    if (!seg.isNative())
      throw invalid(op + ": " + name + " is a heap segment; the native path reads native memory (allocate it from an"
          + " Arena, or use the array overloads)");
    if (!seg.scope().isAlive()) throw invalid(op + ": " + name + " belongs to an arena that is already closed");
    if (!seg.isAccessibleBy(Thread.currentThread()))
      throw invalid(op + ": " + name + " is confined to another thread than " + Thread.currentThread().getName());
    if (seg.byteSize() < need)
      throw invalid(op + ": " + name + " holds " + seg.byteSize() + " bytes, needs " + need);
    if (seg.address() % align != 0)
      throw invalid(op + ": " + name + " address 0x" + Long.toHexString(seg.address()) + " is not aligned to " + align
          + " bytes");
    return seg.asSlice(0, need);
  }

  private static void disjoint(String op, String outName, MemorySegment out, String inName, MemorySegment in) {
    if (out.byteSize() > 0 && in.byteSize() > 0 && out.asOverlappingSlice(in).isPresent())
      throw invalid(op + ": " + outName + " [0x" + Long.toHexString(out.address()) + ", +" + out.byteSize()
          + ") overlaps " + inName + " [0x" + Long.toHexString(in.address()) + ", +" + in.byteSize() + ")");
  }

  private static MoeRouterException invalid(String message) {
    return new MoeRouterException(Status.INVALID_ARGUMENT, message);
  }
}
