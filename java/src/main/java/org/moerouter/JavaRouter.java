// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.nio.Buffer;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.IntBuffer;
import java.nio.ShortBuffer;

/** The pure-Java backend: reference semantics and fallback. Calls are serialised per router. */
final class JavaRouter extends MoeRouter {
  private final JavaRouting.Kernel kernel;
  private final float[] row;
  private final float[] w;
  private final int[] arange;
  /**
   * The current bias version (null: none), never written after it is published: a call copies the
   * reference into the kernel once, at its start, so all its rows rank with one version and a change
   * never waits for the call.
   */
  private volatile float[] bias;

  JavaRouter(RouterConfig config) {
    super(config, Backend.JAVA);
    kernel = new JavaRouting.Kernel(config);
    bias = kernel.bias;
    row = new float[config.experts()];
    w = new float[config.topK()];
    arange = new int[config.topK()];
    for (int j = 0; j < arange.length; j++) arange[j] = j;
  }

  private void loadRow(float[] f32, short[] half, LogitsType type, int t) {
    int e = config.experts();
    int base = t * e;
    if (f32 != null) {
      System.arraycopy(f32, base, row, 0, e);
    } else if (type == LogitsType.BF16) {
      for (int i = 0; i < e; i++) row[i] = JavaRouting.bf16ToFloat(half[base + i]);
    } else {
      for (int i = 0; i < e; i++) row[i] = JavaRouting.f16ToFloat(half[base + i]);
    }
  }

  /**
   * Throws for the first invalid row (rows with mask 0 are not checked; all -1 rows pass when
   * {@code minusOneOk}), before anything is written.
   */
  private void validate(int[] idx, byte[] mask, int tokens, String operation, boolean minusOneOk) {
    int k = config.topK(), e = config.experts();
    for (int t = 0; t < tokens; t++) {
      if (mask != null && mask[t] == 0) continue;
      if (minusOneOk && JavaRouting.isMinusOneRow(idx, t * k, k)) continue;
      if (JavaRouting.checkReplayRow(idx, t * k, k, e) != JavaRouting.REPLAY_OK)
        throw new MoeRouterException(Status.INVALID_REPLAY, operation + " failed: " + Status.INVALID_REPLAY.description()
            + ": " + JavaRouting.replayRowMessage(t, idx, t * k, k, e));
    }
  }

  /**
   * The experts row t replays, in {@code replayIdx} at {@link #replayOffset} (the replay row, or the
   * arange row for an all -1 row under ARANGE), or false when the row is routed live. Rows were validated,
   * so a row starting with -1 is all -1 and its policy is LIVE or ARANGE.
   */
  private boolean planReplay(int[] replayIdx, byte[] replayMask, int t) {
    if (replayIdx == null || (replayMask != null && replayMask[t] == 0)) return false;
    int k = config.topK();
    if (replayIdx[t * k] != -1) {
      replaySource = replayIdx;
      replayOffset = t * k;
      return true;
    }
    if (kernel.minusOneRows != MinusOneRows.ARANGE) return false;
    replaySource = arange;
    replayOffset = 0;
    return true;
  }

  private int[] replaySource;
  private int replayOffset;

  /**
   * Non-finite policy ERROR: the first row whose read set holds NaN or +-inf (live: the whole row;
   * replayed: its k logits, the whole row for softmax pre), rejected before anything is written.
   */
  private void rejectNonfinite(float[] f32, short[] half, LogitsType type, int tokens, int[] idx, byte[] mask,
      boolean backward, String operation) {
    int k = config.topK(), e = config.experts();
    for (int t = 0; t < tokens; t++) {
      loadRow(f32, half, type, t);
      boolean replayed = backward || planReplay(idx, mask, t);
      int[] src = backward ? idx : replaySource;
      int off = backward ? t * k : replayOffset;
      int bad = -1;
      if (!replayed || kernel.needsFullRow()) {
        for (int i = 0; i < e && bad < 0; i++) if (!JavaRouting.isFinite(row[i])) bad = i;
      } else {
        for (int j = 0; j < k && bad < 0; j++) if (!JavaRouting.isFinite(row[src[off + j]])) bad = src[off + j];
      }
      if (bad >= 0)
        throw new MoeRouterException(Status.NONFINITE, operation + " failed: " + Status.NONFINITE.description() + ": "
            + JavaRouting.nonfiniteMessage(t, bad, row[bad]));
    }
  }

  @Override
  synchronized long routeArrays(float[] f32, short[] half, LogitsType type, int tokens, int[] replayIdx,
      byte[] replayMask, int[] outIdx, float[] outWeights, byte[] outFlags) {
    String operation = replayIdx != null ? "replay" : "route";
    kernel.bias = bias;
    if (replayIdx != null) validate(replayIdx, replayMask, tokens, operation, kernel.minusOneRows != MinusOneRows.REJECT);
    if (kernel.nonFinite == NonFinitePolicy.ERROR)
      rejectNonfinite(f32, half, type, tokens, replayIdx, replayMask, false, operation);
    final int k = config.topK();
    final float scale = config.scale();
    final boolean zero = kernel.nonFinite == NonFinitePolicy.ZERO;
    long nonfinite = 0;
    for (int t = 0; t < tokens; t++) {
      loadRow(f32, half, type, t);
      int off = t * k;
      boolean replay = planReplay(replayIdx, replayMask, t);
      if (kernel.needsFullRow()) kernel.rowSoftmax(row);
      boolean nf;
      if (replay) {
        if (replaySource != outIdx || replayOffset != off) System.arraycopy(replaySource, replayOffset, outIdx, off, k);
        nf = kernel.needsFullRow() && kernel.rowHasNonfinite(row);
      } else {
        nf = kernel.selectRow(row, outIdx, off);
      }
      nf |= kernel.unscaledWeights(row, outIdx, off, w);
      for (int j = 0; j < k; j++) outWeights[off + j] = zero && nf ? 0f : w[j] * scale;
      if (outFlags != null) outFlags[t] = (byte) (nf ? 1 : 0);
      if (nf) nonfinite++;
    }
    return nonfinite;
  }

  @Override
  synchronized void backwardArrays(float[] f32, short[] half, LogitsType type, int tokens, int[] idx,
      float[] gradWeights, byte[] flags, float[] gradLogits) {
    validate(idx, null, tokens, "backward", false);
    if (kernel.nonFinite == NonFinitePolicy.ERROR) rejectNonfinite(f32, half, type, tokens, idx, null, true, "backward");
    final int k = config.topK(), e = config.experts();
    final boolean zero = kernel.nonFinite == NonFinitePolicy.ZERO;
    float[] grad = new float[e];
    for (int t = 0; t < tokens; t++) {
      loadRow(f32, half, type, t);
      if (kernel.needsFullRow()) kernel.rowSoftmax(row);
      boolean nf = kernel.unscaledWeights(row, idx, t * k, w);
      // ZERO: the forward's flags tell what it read (a live row read the whole row), then our own reads.
      if (zero && (nf || flags[t] != 0 || (kernel.needsFullRow() && kernel.rowHasNonfinite(row)))) {
        java.util.Arrays.fill(gradLogits, t * e, (t + 1) * e, 0f);
        continue;
      }
      kernel.backwardRow(row, idx, t * k, w, gradWeights, t * k, grad);
      System.arraycopy(grad, 0, gradLogits, t * e, e);
    }
  }

  // Direct buffers and raw host memory: copied in and out (the Java backend is the reference, not the fast path).
  @Override
  long routeBuffers(Buffer logits, LogitsType type, int tokens, IntBuffer replayIdx, ByteBuffer replayMask,
      IntBuffer outIdx, FloatBuffer outWeights, ByteBuffer outFlags) {
    int t = javaSize(tokens, config.experts());
    int n = t * config.experts(), tk = t * config.topK();
    float[] f32 = null;
    short[] half = null;
    if (logits instanceof ByteBuffer) {
      // ByteBuffer.duplicate() resets the order to big-endian; the caller checked it was native.
      ByteBuffer b = ((ByteBuffer) logits).duplicate().order(ByteOrder.nativeOrder());
      if (type == LogitsType.FP32) b.asFloatBuffer().get(f32 = new float[n]);
      else b.asShortBuffer().get(half = new short[n]);
    } else if (logits instanceof FloatBuffer) {
      ((FloatBuffer) logits).duplicate().get(f32 = new float[n]);
    } else {
      ((ShortBuffer) logits).duplicate().get(half = new short[n]);
    }
    int[] replay = null;
    byte[] mask = null;
    if (replayIdx != null) replayIdx.duplicate().get(replay = new int[tk]);
    if (replayMask != null) replayMask.duplicate().get(mask = new byte[t]);
    int[] idx = new int[tk];
    float[] w = new float[tk];
    byte[] flags = outFlags != null ? new byte[t] : null;
    long nonfinite = routeArrays(f32, half, type, t, replay, mask, idx, w, flags);
    outIdx.duplicate().put(idx);
    outWeights.duplicate().put(w);
    if (flags != null) outFlags.duplicate().put(flags);
    return nonfinite;
  }

  @Override
  long routeHost(long logits, LogitsType type, long tokens, long replayIdx, long replayMask, long outIdx,
      long outWeights, long outFlags) {
    int t = javaSize(tokens, config.experts());
    int tk = t * config.topK();
    HostLogits l = new HostLogits(logits, type, t * config.experts());
    int[] replay = null;
    byte[] mask = null;
    if (replayIdx != 0) HostMemory.copy(replayIdx, replay = new int[tk], tk);
    if (replayMask != 0) HostMemory.copy(replayMask, mask = new byte[t], t);
    int[] idx = new int[tk];
    float[] w = new float[tk];
    byte[] flags = outFlags != 0 ? new byte[t] : null;
    long nonfinite = routeArrays(l.f32, l.half, type, t, replay, mask, idx, w, flags);
    HostMemory.copy(idx, tk, outIdx);
    HostMemory.copy(w, tk, outWeights);
    if (flags != null) HostMemory.copy(flags, t, outFlags);
    return nonfinite;
  }

  @Override
  void backwardHost(long logits, LogitsType type, long tokens, long idxAddress, long gradWeights, long flagsAddress,
      long gradLogits) {
    int t = javaSize(tokens, config.experts());
    int n = t * config.experts(), tk = t * config.topK();
    HostLogits l = new HostLogits(logits, type, n);
    int[] idx = new int[tk];
    float[] dw = new float[tk];
    float[] grad = new float[n];
    HostMemory.copy(idxAddress, idx, tk);
    byte[] flags = null;
    HostMemory.copy(gradWeights, dw, tk);
    if (flagsAddress != 0) HostMemory.copy(flagsAddress, flags = new byte[t], t);
    backwardArrays(l.f32, l.half, type, t, idx, dw, flags, grad);
    HostMemory.copy(grad, n, gradLogits);
  }

  /** Logits [n] at a host address, copied into the array the array calls take for their type. */
  private static final class HostLogits {
    final float[] f32;
    final short[] half;

    HostLogits(long address, LogitsType type, int n) {
      f32 = type == LogitsType.FP32 ? new float[n] : null;
      half = f32 == null ? new short[n] : null;
      if (f32 != null) HostMemory.copy(address, f32, n);
      else HostMemory.copy(address, half, n);
    }
  }

  private static int javaSize(long tokens, int experts) {
    if (tokens * experts > Integer.MAX_VALUE - 8)
      throw new MoeRouterException(Status.UNSUPPORTED, "the Java backend handles at most 2^31 logits per call");
    return (int) tokens;
  }

  @Override
  void applyExpertBias(float[] bias) {
    this.bias = bias.clone();
  }

  @Override
  void freeResources() {}
}
