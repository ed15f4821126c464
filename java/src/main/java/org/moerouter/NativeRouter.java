// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.lang.ref.Cleaner;
import java.lang.ref.Reference;
import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.util.concurrent.atomic.AtomicLong;

/** Router over the native library: CPU kernels, or CUDA kernels (host arrays staged, or device pointers). */
final class NativeRouter extends MoeRouter {
  private static final int BACKEND_CPU = 1;
  private static final int BACKEND_CUDA = 2;

  /** Backstop for routers never closed: one daemon thread for the whole library. */
  private static final Cleaner CLEANER = Cleaner.create();
  private static final AtomicLong LIVE = new AtomicLong();

  // Valid from construction until freeResources(); MoeRouter's use counter keeps calls off it after that.
  private final long handle;
  private final Cleaner.Cleanable destroy;

  /** Frees a native router exactly once: on close(), or when the Java router became unreachable. */
  private static final class Destroy implements Runnable {
    private final long handle;

    Destroy(long handle) {
      this.handle = handle;
    }

    @Override
    public void run() {
      RouterNative.moe_jni_router_destroy(handle);
      LIVE.decrementAndGet();
    }
  }

  NativeRouter(RouterConfig config, Backend backend) {
    super(config, backend);
    // Groups go as configured (not only when grouped()): the native rules check them the same way.
    long h = RouterNative.moe_jni_router_create(backend == Backend.CUDA ? BACKEND_CUDA : BACKEND_CPU, 0,
        config.experts(), config.topK(), config.scoreFunction().code, config.preSoftmax() ? 1 : 0, config.groups(),
        config.groupTopK(), config.scale(), config.expertBiasUnsafe(), config.normalizeCode(),
        config.groupScore().code, config.nonFinite().code, config.minusOneRows().code);
    if (h <= 0) throw RouterNative.error((int) -h, "create " + backend + " router");
    handle = h;
    oneRow = backend == Backend.CPU && !(config.scoreFunction() == ScoreFunction.SOFTMAX && config.preSoftmax())
        ? new JavaRouting.Kernel(config) : null;
    LIVE.incrementAndGet();
    // Destroy holds the handle, not the router, or the router would never become unreachable.
    destroy = CLEANER.register(this, new Destroy(h));
  }

  /** The native handle, for test hooks in this package (the C ABI's own checks, past the Java ones). */
  long handle() {
    return handle;
  }

  /** Native routers created and not yet freed (by close() or the Cleaner); for tests. */
  static long live() {
    return LIVE.get();
  }

  @Override
  long routeArrays(float[] f32, short[] half, LogitsType type, int tokens, int[] replayIdx, byte[] replayMask,
      int[] outIdx, float[] outWeights, byte[] outFlags) {
    if (oneRow != null && tokens == 1 && replayIdx != null && replayIdx[0] != -1
        && (replayMask == null || replayMask[0] != 0))
      return replayOneRow(f32, half, type, replayIdx, outIdx, outWeights, outFlags);
    long h = handle;
    long r = f32 != null
        ? RouterNative.moe_jni_route_host(h, f32, type.code, tokens, replayIdx, replayMask, outIdx, outWeights, outFlags)
        : RouterNative.moe_jni_route_host(h, half, type.code, tokens, replayIdx, replayMask, outIdx, outWeights,
            outFlags);
    if (r < 0) throw RouterNative.error((int) -r, replayIdx != null ? "replay" : "route");
    return r;
  }

  /**
   * CPU routers whose replayed rows read only their k logits (not softmax pre): the parameters of the
   * one-row replay below, else null. Its methods used there keep no state, so calls may run at once.
   */
  private final JavaRouting.Kernel oneRow;

  /**
   * A replay of one token on a CPU router, in Java: pinning the call's Java arrays for JNI costs more (30-40 ns an
   * array, four or five per call) than the whole row does in Java (k exponentials), so this is what a decode step pays
   * least for (CpuGoalsBenchmark, tokens = 1: docs/benchmarks.md, stage 2). Like every Java float operation it runs in
   * the thread's MXCSR (docs/cpu-design.md, "Decode replay"). The same operations in the same order as JavaRouter
   * (JavaRouting's), so every backend still agrees bit for bit: the checks first, before anything is written, then the
   * k logits gathered into outWeights (the rule's own scratch: it is written next anyway) and the weights computed
   * there in place over 0..k-1.
   */
  private long replayOneRow(float[] f32, short[] half, LogitsType type, int[] replayIdx, int[] outIdx,
      float[] outWeights, byte[] outFlags) {
    final JavaRouting.Kernel kr = oneRow;
    final int k = kr.k, e = kr.experts;
    if (JavaRouting.checkReplayRow(replayIdx, 0, k, e) != JavaRouting.REPLAY_OK)
      throw new MoeRouterException(Status.INVALID_REPLAY, "replay failed: " + Status.INVALID_REPLAY.description()
          + ": " + JavaRouting.replayRowMessage(0, replayIdx, 0, k, e));
    if (kr.nonFinite == NonFinitePolicy.ERROR)
      for (int j = 0; j < k; j++) {
        int x = replayIdx[j];
        float l = f32 != null ? f32[x] : JavaRouting.halfToFloat(half[x], type);
        if (!JavaRouting.isFinite(l))
          throw new MoeRouterException(Status.NONFINITE, "replay failed: " + Status.NONFINITE.description() + ": "
              + JavaRouting.nonfiniteMessage(0, x, l));
      }
    for (int j = 0; j < k; j++) {
      int x = replayIdx[j];
      outWeights[j] = f32 != null ? f32[x] : JavaRouting.halfToFloat(half[x], type);
    }
    boolean nf = kr.unscaledWeights(outWeights, ARANGE, 0, outWeights);
    if (outIdx != replayIdx) System.arraycopy(replayIdx, 0, outIdx, 0, k);
    boolean zero = nf && kr.nonFinite == NonFinitePolicy.ZERO;
    for (int j = 0; j < k; j++) outWeights[j] = zero ? 0f : outWeights[j] * kr.scale;
    if (outFlags != null) outFlags[0] = (byte) (nf ? 1 : 0);
    return nf ? 1 : 0;
  }

  private static final int[] ARANGE = new int[RouterConfig.MAX_TOP_K];

  static {
    for (int j = 0; j < ARANGE.length; j++) ARANGE[j] = j;
  }

  // Direct-buffer addresses per argument position (see AddressCache).
  private final HostMemory.AddressCache logitsAt = new HostMemory.AddressCache();
  private final HostMemory.AddressCache replayAt = new HostMemory.AddressCache();
  private final HostMemory.AddressCache maskAt = new HostMemory.AddressCache();
  private final HostMemory.AddressCache idxAt = new HostMemory.AddressCache();
  private final HostMemory.AddressCache weightsAt = new HostMemory.AddressCache();
  private final HostMemory.AddressCache flagsAt = new HostMemory.AddressCache();

  @Override
  long routeBuffers(Buffer logits, LogitsType type, int tokens, IntBuffer replayIdx, ByteBuffer replayMask,
      IntBuffer outIdx, FloatBuffer outWeights, ByteBuffer outFlags) {
    long r = HostCalls.route(handle, backend == Backend.CPU, logitsAt.address(logits), type.code, tokens,
        replayAt.address(replayIdx), maskAt.address(replayMask), idxAt.address(outIdx), weightsAt.address(outWeights),
        flagsAt.address(outFlags));
    // Raw addresses do not keep the buffers alive: the native code must not outlive them.
    Reference.reachabilityFence(logits);
    Reference.reachabilityFence(replayIdx);
    Reference.reachabilityFence(replayMask);
    Reference.reachabilityFence(outIdx);
    Reference.reachabilityFence(outWeights);
    Reference.reachabilityFence(outFlags);
    if (r < 0) throw RouterNative.error((int) -r, replayIdx != null ? "replay" : "route");
    return r;
  }

  @Override
  long routeHost(long logits, LogitsType type, long tokens, long replayIdx, long replayMask, long outIdx,
      long outWeights, long outFlags) {
    long r = HostCalls.route(handle, backend == Backend.CPU, logits, type.code, tokens, replayIdx, replayMask, outIdx,
        outWeights, outFlags);
    if (r < 0) throw RouterNative.error((int) -r, replayIdx != 0 ? "replay" : "route");
    return r;
  }

  @Override
  void routeDeviceImpl(long logits, LogitsType type, long tokens, long replayIdx, long replayMask, long outIdx,
      long outWeights, long outFlags, long nonfiniteRows, long stream) {
    if (backend != Backend.CUDA) super.routeDeviceImpl(logits, type, tokens, replayIdx, replayMask, outIdx, outWeights,
        outFlags, nonfiniteRows, stream);
    int st = RouterNative.moe_jni_route_device(handle, logits, type.code, tokens, replayIdx, replayMask, outIdx,
        outWeights, outFlags, nonfiniteRows, stream);
    if (st != 0) throw RouterNative.error(st, "routeDevice");
  }

  @Override
  void checkReplayImpl() {
    long r = RouterNative.moe_jni_check_replay(handle);
    if (r == -1) return;
    if (r < -1) throw RouterNative.error((int) (-r - 1), "checkReplay");
    throw RouterNative.error(Status.INVALID_REPLAY.code(), "device replay");
  }

  @Override
  void backwardArrays(float[] f32, short[] half, LogitsType type, int tokens, int[] idx, float[] gradWeights,
      byte[] flags, float[] gradLogits) {
    long h = handle;
    int st = f32 != null
        ? RouterNative.moe_jni_backward_host(h, f32, type.code, tokens, idx, gradWeights, flags, gradLogits)
        : RouterNative.moe_jni_backward_host(h, half, type.code, tokens, idx, gradWeights, flags, gradLogits);
    if (st != 0) throw RouterNative.error(st, "backward");
  }

  @Override
  void backwardHost(long logits, LogitsType type, long tokens, long idx, long gradWeights, long flags,
      long gradLogits) {
    int st = HostCalls.backward(handle, backend == Backend.CPU, logits, type.code, tokens, idx, gradWeights, flags,
        gradLogits);
    if (st != 0) throw RouterNative.error(st, "backward");
  }

  @Override
  void backwardDeviceImpl(long logits, LogitsType type, long tokens, long idx, long gradWeights, long flags,
      long gradLogits, long stream) {
    if (backend != Backend.CUDA)
      super.backwardDeviceImpl(logits, type, tokens, idx, gradWeights, flags, gradLogits, stream);
    int st = RouterNative.moe_jni_backward_device(handle, logits, type.code, tokens, idx, gradWeights, flags,
        gradLogits, stream);
    if (st != 0) throw RouterNative.error(st, "backwardDevice");
  }

  @Override
  void validTokensDeviceImpl(long logits, LogitsType type, long tokens, long padding, long outValid, long outCount,
      long stream) {
    if (backend != Backend.CUDA) super.validTokensDeviceImpl(logits, type, tokens, padding, outValid, outCount, stream);
    int st = RouterNative.moe_jni_valid_tokens_device(handle, logits, type.code, tokens, padding, outValid, outCount,
        stream);
    if (st != 0) throw RouterNative.error(st, "validTokensDevice");
  }

  @Override
  void tokensPerExpertDeviceImpl(long idx, long map, long valid, long tokens, long outCounts, long stream) {
    if (backend != Backend.CUDA) super.tokensPerExpertDeviceImpl(idx, map, valid, tokens, outCounts, stream);
    int st = RouterNative.moe_jni_tokens_per_expert_device(handle, idx, map, valid, tokens, outCounts, stream);
    if (st != 0) throw RouterNative.error(st, map != 0 ? "tokensPerExpertMapDevice" : "tokensPerExpertDevice");
  }

  @Override
  long workspaceBytesImpl(int kind, long tokens, LossConfig c, boolean auxOutputs, DropPolicy policy) {
    if (backend != Backend.CUDA) return super.workspaceBytesImpl(kind, tokens, c, auxOutputs, policy);
    long r = kind == 0
        ? RouterNative.moe_jni_workspace_bytes(handle, 0, tokens, c.auxCoeff(), c.seqAuxCoeff(), c.globalAuxCoeff(),
            c.zCoeff(), c.seqLength(), c.seqLayout().code, auxOutputs ? 1 : 0, 0)
        : RouterNative.moe_jni_workspace_bytes(handle, 1, tokens, 0f, 0f, 0f, 0f, 0, 0, 0, policy.code);
    if (r < 0) throw RouterNative.error((int) -r, kind == 0 ? "lossesWorkspaceBytes" : "dropTokensWorkspaceBytes");
    return r;
  }

  @Override
  void lossesDeviceImpl(long logits, LogitsType type, long tokens, long valid, LossConfig c, long global,
      double globalNumTokens, long outValues, long outCounts, long outScores, long outMap, long grad, long workspace,
      long workspaceBytes, long stream) {
    if (backend != Backend.CUDA)
      super.lossesDeviceImpl(logits, type, tokens, valid, c, global, globalNumTokens, outValues, outCounts, outScores,
          outMap, grad, workspace, workspaceBytes, stream);
    int st = RouterNative.moe_jni_losses_device(handle, logits, type.code, tokens, valid, c.auxCoeff(), c.seqAuxCoeff(),
        c.globalAuxCoeff(), c.zCoeff(), c.seqLength(), c.seqLayout().code, global, globalNumTokens, outValues,
        outCounts, outScores, outMap, grad, workspace, workspaceBytes, stream);
    if (st != 0) throw RouterNative.error(st, "lossesDevice");
  }

  @Override
  void dropTokensDeviceImpl(TokenDropping drop, long idx, long weights, long tokens, long outMap, long outProbs,
      long outKept, long outKeptCounts, long outDropped, long workspace, long workspaceBytes, long stream) {
    if (backend != Backend.CUDA)
      super.dropTokensDeviceImpl(drop, idx, weights, tokens, outMap, outProbs, outKept, outKeptCounts, outDropped,
          workspace, workspaceBytes, stream);
    int st = RouterNative.moe_jni_drop_tokens_device(handle, idx, weights, tokens, drop.capacityFactor(),
        drop.policy().code, drop.padToCapacity() ? 1 : 0, outMap, outProbs, outKept, outKeptCounts, outDropped,
        workspace, workspaceBytes, stream);
    if (st != 0) throw RouterNative.error(st, "dropTokensDevice");
  }

  @Override
  boolean nativeHelpers() {
    return true;
  }

  @Override
  long validTokensArrays(float[] f32, short[] half, LogitsType type, int tokens, byte[] padding, byte[] out) {
    long h = handle;
    long n = half == null
        ? RouterNative.moe_jni_valid_tokens(h, f32, type.code, tokens, padding, out)
        : RouterNative.moe_jni_valid_tokens(h, half, type.code, tokens, padding, out);
    if (n < 0) throw RouterNative.error((int) -n, "validTokens");
    return n;
  }

  @Override
  void lossesArrays(float[] f32, short[] half, LogitsType type, int tokens, byte[] valid, LossConfig c,
      double[] global, double globalNumTokens, LossValues out, float[] scores, byte[] map, float[] grad) {
    long h = handle;
    double[] v = out.raw;
    int st = half == null
        ? RouterNative.moe_jni_losses(h, f32, type.code, tokens, valid, c.auxCoeff(), c.seqAuxCoeff(),
            c.globalAuxCoeff(), c.zCoeff(), c.seqLength(), c.seqLayout().code, global, globalNumTokens, v,
            out.auxTokensPerExpert(), scores, map, grad)
        : RouterNative.moe_jni_losses(h, half, type.code, tokens, valid, c.auxCoeff(), c.seqAuxCoeff(),
            c.globalAuxCoeff(), c.zCoeff(), c.seqLength(), c.seqLayout().code, global, globalNumTokens, v,
            out.auxTokensPerExpert(), scores, map, grad);
    if (st != 0) throw RouterNative.error(st, "losses");
    out.auxLoss = v[0];
    out.seqAuxLoss = v[1];
    out.globalAuxLoss = v[2];
    out.zLoss = v[3];
    out.validTokens = (long) v[4];
  }

  @Override
  long dropArrays(TokenDropping drop, int[] idx, float[] w, int tokens, byte[] map, float[] probs, byte[] kept,
      int[] keptCounts) {
    long r = RouterNative.moe_jni_drop_tokens(handle, idx, w, tokens, drop.capacityFactor(), drop.policy().code,
        drop.padToCapacity() ? 1 : 0, map, probs, kept, keptCounts);
    if (r < 0) throw RouterNative.error((int) -r, "dropTokens");
    return r;
  }

  @Override
  void applyExpertBias(float[] bias) {
    int st = RouterNative.moe_jni_router_set_bias(handle, bias);
    if (st != 0) throw RouterNative.error(st, "setExpertBias");
  }

  @Override
  void freeResources() {
    destroy.clean();
  }
}
