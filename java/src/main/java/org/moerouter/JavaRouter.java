package org.moerouter;

/** The pure-Java backend: reference semantics and fallback. Calls are serialised per router. */
final class JavaRouter extends MoeRouter {
  private final JavaRouting.Kernel kernel;
  private final float[] row;
  private final float[] w;
  private boolean closed;

  JavaRouter(RouterConfig config) {
    super(config, Backend.JAVA);
    kernel = new JavaRouting.Kernel(config);
    row = new float[config.experts()];
    w = new float[config.topK()];
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

  /** Throws for the first invalid row (rows with mask 0 are not checked), before anything is written. */
  private void validate(int[] idx, byte[] mask, int tokens, String operation) {
    int k = config.topK(), e = config.experts();
    for (int t = 0; t < tokens; t++) {
      if (mask != null && mask[t] == 0) continue;
      if (JavaRouting.checkReplayRow(idx, t * k, k, e) != JavaRouting.REPLAY_OK)
        throw new MoeRouterException(Status.INVALID_REPLAY, operation + " failed: " + Status.INVALID_REPLAY.description()
            + ": " + JavaRouting.replayRowMessage(t, idx, t * k, k, e));
    }
  }

  @Override
  synchronized long routeArrays(float[] f32, short[] half, LogitsType type, int tokens, int[] replayIdx,
      byte[] replayMask, int[] outIdx, float[] outWeights) {
    ensureOpen();
    if (replayIdx != null) validate(replayIdx, replayMask, tokens, "replay");
    final int k = config.topK();
    final float scale = config.scale();
    long nonfinite = 0;
    for (int t = 0; t < tokens; t++) {
      loadRow(f32, half, type, t);
      int off = t * k;
      boolean replay = replayIdx != null && (replayMask == null || replayMask[t] != 0);
      if (kernel.needsFullRow()) kernel.rowSoftmax(row);
      boolean nf;
      if (replay) {
        if (replayIdx != outIdx) System.arraycopy(replayIdx, off, outIdx, off, k);
        nf = kernel.needsFullRow() && kernel.rowHasNonfinite(row);
      } else {
        nf = kernel.selectRow(row, outIdx, off);
      }
      nf |= kernel.unscaledWeights(row, outIdx, off, w);
      for (int j = 0; j < k; j++) outWeights[off + j] = w[j] * scale;
      if (nf) nonfinite++;
    }
    return nonfinite;
  }

  @Override
  synchronized void backwardArrays(float[] f32, short[] half, LogitsType type, int tokens, int[] idx,
      float[] gradWeights, float[] gradLogits) {
    ensureOpen();
    validate(idx, null, tokens, "backward");
    final int k = config.topK(), e = config.experts();
    float[] grad = new float[e];
    for (int t = 0; t < tokens; t++) {
      loadRow(f32, half, type, t);
      if (kernel.needsFullRow()) kernel.rowSoftmax(row);
      kernel.unscaledWeights(row, idx, t * k, w);
      kernel.backwardRow(row, idx, t * k, w, gradWeights, t * k, grad);
      System.arraycopy(grad, 0, gradLogits, t * e, e);
    }
  }

  // Raw host memory: copied in and out (the Java backend is the reference, not the fast path).
  @Override
  long routeHost(long logits, LogitsType type, long tokens, long replayIdx, long replayMask, long outIdx,
      long outWeights) {
    int t = javaSize(tokens, config.experts());
    int n = t * config.experts(), tk = t * config.topK();
    float[] f32 = null;
    short[] half = null;
    if (type == LogitsType.FP32) HostMemory.copy(logits, f32 = new float[n], n);
    else HostMemory.copy(logits, half = new short[n], n);
    int[] replay = null;
    byte[] mask = null;
    if (replayIdx != 0) HostMemory.copy(replayIdx, replay = new int[tk], tk);
    if (replayMask != 0) HostMemory.copy(replayMask, mask = new byte[t], t);
    int[] idx = new int[tk];
    float[] w = new float[tk];
    long nonfinite = routeArrays(f32, half, type, t, replay, mask, idx, w);
    HostMemory.copy(idx, tk, outIdx);
    HostMemory.copy(w, tk, outWeights);
    return nonfinite;
  }

  @Override
  void backwardHost(long logits, LogitsType type, long tokens, long idxAddress, long gradWeights, long gradLogits) {
    int t = javaSize(tokens, config.experts());
    int n = t * config.experts(), tk = t * config.topK();
    float[] f32 = null;
    short[] half = null;
    if (type == LogitsType.FP32) HostMemory.copy(logits, f32 = new float[n], n);
    else HostMemory.copy(logits, half = new short[n], n);
    int[] idx = new int[tk];
    float[] dw = new float[tk];
    float[] grad = new float[n];
    HostMemory.copy(idxAddress, idx, tk);
    HostMemory.copy(gradWeights, dw, tk);
    backwardArrays(f32, half, type, t, idx, dw, grad);
    HostMemory.copy(grad, n, gradLogits);
  }

  private static int javaSize(long tokens, int experts) {
    if (tokens * experts > Integer.MAX_VALUE - 8)
      throw new MoeRouterException(Status.UNSUPPORTED, "the Java backend handles at most 2^31 logits per call");
    return (int) tokens;
  }

  @Override
  public synchronized void setExpertBias(float[] bias) {
    checkBias(bias);
    kernel.bias = bias.clone();
  }

  private void ensureOpen() {
    if (closed) throw new MoeRouterException(Status.INVALID_ARGUMENT, "router is closed");
  }

  @Override
  public synchronized void close() {
    closed = true;
  }
}
