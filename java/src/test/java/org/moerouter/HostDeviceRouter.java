// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.ArrayList;
import java.util.List;
import org.bytedeco.javacpp.Pointer;

/**
 * A test double of a CUDA router whose "device memory" is host memory: {@link #routeDevice} logs its
 * arguments and runs the Java backend's raw-address path on them, so code that drives a CUDA router through
 * device pointers (the replay layer's {@code routeDevice}: which pointers, which offsets, how many calls)
 * can be tested on a machine without a GPU. It says nothing about the CUDA kernels themselves
 * ({@code CudaRouterTest} runs those on a GPU host). Every other call is the Java backend's
 * ({@link ForwardingRouter}).
 *
 * <p>Memory must be registered with {@link #device}: a call whose operands do not lie inside registered
 * memory fails with {@link Status#CUDA_ERROR} before touching anything, as an illegal address would on a
 * GPU, instead of corrupting the test JVM.
 */
public final class HostDeviceRouter extends ForwardingRouter {
  /** The arguments of one {@code routeDevice} call. */
  public static final class Call {
    public final long logits, tokens, replayIdx, replayMask, outIdx, outWeights, outFlags, nonfiniteRows, stream;
    public final LogitsType type;

    Call(long logits, LogitsType type, long tokens, long replayIdx, long replayMask, long outIdx, long outWeights,
        long outFlags, long nonfiniteRows, long stream) {
      this.logits = logits;
      this.type = type;
      this.tokens = tokens;
      this.replayIdx = replayIdx;
      this.replayMask = replayMask;
      this.outIdx = outIdx;
      this.outWeights = outWeights;
      this.outFlags = outFlags;
      this.nonfiniteRows = nonfiniteRows;
      this.stream = stream;
    }
  }

  private final List<long[]> allocations = new ArrayList<>();
  /** Every {@code routeDevice} call, oldest first. */
  public final List<Call> calls = new ArrayList<>();

  /**
   * A router of {@code config} that treats device addresses as host addresses.
   *
   * @param config the router's configuration
   */
  public HostDeviceRouter(RouterConfig config) {
    super(config);
    // Host addresses are read and written through the JNI library (HostMemory).
    if (!NativeLibrary.loaded()) throw new IllegalStateException("native library: " + NativeLibrary.loadFailure());
  }

  /**
   * Makes {@code p}'s memory (its whole capacity) "device memory" that {@code routeDevice} may read and write.
   *
   * @param p host memory allocated by JavaCPP
   * @param <P> the pointer's type
   * @return p
   */
  public <P extends Pointer> P device(P p) {
    allocations.add(new long[] {p.address(), p.address() + p.capacity() * p.sizeof()});
    return p;
  }

  private void check(String operand, long address, long bytes) {
    if (bytes == 0) return;
    for (long[] a : allocations)
      if (address >= a[0] && address <= a[1] - bytes) return;
    throw new MoeRouterException(Status.CUDA_ERROR, "illegal address: " + operand + " [0x" + Long.toHexString(address)
        + ", +" + bytes + ") lies outside every registered allocation");
  }

  @Override
  void routeDeviceImpl(long logits, LogitsType type, long tokens, long replayIdx, long replayMask, long outIdx,
      long outWeights, long outFlags, long nonfiniteRows, long stream) {
    long tk = tokens * config.topK() * 4L;
    check("logits", logits, tokens * config.experts() * (type == LogitsType.FP32 ? 4L : 2L));
    if (replayIdx != 0) check("replayIdx", replayIdx, tk);
    if (replayMask != 0) check("replayMask", replayMask, tokens);
    check("outIdx", outIdx, tk);
    check("outWeights", outWeights, tk);
    if (outFlags != 0) check("outFlags", outFlags, tokens);
    if (nonfiniteRows != 0) check("nonfiniteRows", nonfiniteRows, 8);
    calls.add(new Call(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, outFlags, nonfiniteRows, stream));
    long bad = inner.routeHost(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights, outFlags);
    // The int64 count as two little-endian ints (every platform the library builds for is little-endian).
    if (nonfiniteRows != 0) HostMemory.copy(new int[] {(int) bad, (int) (bad >>> 32)}, 2, nonfiniteRows);
  }
}
