// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import com.github.tjake.jlama.math.ActivationFunction;
import com.github.tjake.jlama.math.VectorMath;
import com.github.tjake.jlama.model.MoEBlock;
import com.github.tjake.jlama.model.functions.FeedForward;
import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.FloatBufferTensor;
import com.github.tjake.jlama.tensor.operations.TensorOperations;
import com.github.tjake.jlama.tensor.operations.TensorOperationsProvider;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import java.util.Optional;
import java.util.function.Consumer;

/**
 * A Mixtral sparse-MoE layer for jlama whose routing is done by an {@link ExpertRouter} (moe-router, through
 * {@link MixtralRouting}) instead of MoEBlock's private top-k. Per call, for input [T, D]:
 * <ol>
 *   <li>gate logits [T, E] with jlama's matmul kernel over the layer's {@code gate.weight};</li>
 *   <li>the router picks k experts per token and their weights (live, recorded, or replayed);</li>
 *   <li>tokens are grouped by expert and each expert runs once on its rows, with jlama's kernels and the
 *       layer's own w1/w3/w2 tensors: {@code w2(silu(w1 x) * w3 x)};</li>
 *   <li>combine: {@code y_t = sum_j w_tj * expert_{idx_tj}(x_t)} ({@link Combine#MIXTRAL}), or the unweighted
 *       sum jlama 0.8.4's MoEBlock computes ({@link Combine#UNWEIGHTED}, for the parity check).</li>
 * </ol>
 * Experts are visited in index order and each expert's rows in token order, so a token's sum is formed in
 * the same order whatever else is in the batch. The last bits still move: jlama's Vector API dot products
 * end in {@code reduceLanes(ADD)}, whose order differs before and after the JIT compiles them, so the same
 * call on the same input changes in the last place while the JVM warms up. Matmul inputs must be fp32 or
 * bf16 (rows are gathered by copying; I8 activations keep their block scales apart).
 *
 * <p>Unlike MoEBlock 0.8.4, a batch of T &gt; 1 tokens is handled row by row correctly (MoEBlock writes the
 * first expert of every token into row 0). Not thread-safe: one forward at a time per model, as in jlama.
 */
public final class MoeRouterFeedForward implements FeedForward {
  /** How the k expert outputs of a token are summed. */
  public enum Combine {
    /** {@code sum_j w_j * expert_j(x)} with the router's weights (Mixtral, Hugging Face, vLLM). */
    MIXTRAL,
    /** {@code sum_j expert_j(x)}: what jlama 0.8.4's MoEBlock computes (tjake/Jlama#201). */
    UNWEIGHTED
  }

  private static final ValueLayout.OfFloat F32_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

  private final RoutedMixtralModel model;
  private final int layer;
  private final int experts;
  private final int topK;
  private final int dim;
  private final int hidden;
  private final ActivationFunction.Type activation;
  private final AbstractTensor gate;
  private final AbstractTensor[] w1;
  private final AbstractTensor[] w2;
  private final AbstractTensor[] w3;
  private final AbstractTensor[] upResults = new AbstractTensor[2];
  private final AbstractTensor[] upWeights = new AbstractTensor[2];
  private final int[] rowStart;
  private final int[] rowCursor;
  private float[] logits = new float[0];
  private int[] idx = new int[0];
  private float[] weights = new float[0];
  private int[] rowToken = new int[0];
  private int[] rowSlot = new int[0];

  /**
   * A layer over jlama tensors: {@code gate} [E, D], and per expert {@code w1} [F, D] (gate projection),
   * {@code w2} [D, F] (down) and {@code w3} [F, D] (up), as Mixtral checkpoints name them.
   */
  public MoeRouterFeedForward(RoutedMixtralModel model, int layer, int experts, int topK, ActivationFunction.Type activation,
      AbstractTensor gate, AbstractTensor[] w1, AbstractTensor[] w2, AbstractTensor[] w3) {
    this.model = Objects.requireNonNull(model, "model");
    this.layer = layer;
    this.experts = experts;
    this.topK = topK;
    this.dim = model.getConfig().embeddingLength;
    this.hidden = model.getConfig().hiddenLength;
    this.activation = Objects.requireNonNull(activation, "activation");
    this.gate = Objects.requireNonNull(gate, "gate");
    if (topK < 1 || topK > experts) throw new IllegalArgumentException("layer " + layer + ": top-k " + topK + " outside [1, " + experts + "]");
    if (gate.shape().first() != experts || gate.shape().last() != dim)
      throw new IllegalArgumentException("layer " + layer + ": gate.weight is " + gate.shape() + ", expected [" + experts + ", " + dim + "]");
    for (AbstractTensor[] w : List.of(w1, w2, w3))
      if (w.length != experts) throw new IllegalArgumentException("layer " + layer + ": " + w.length + " expert tensors, expected " + experts);
    this.w1 = w1.clone();
    this.w2 = w2.clone();
    this.w3 = w3.clone();
    this.rowStart = new int[experts + 1];
    this.rowCursor = new int[experts];
  }

  public int layer() {
    return layer;
  }

  @Override
  public AbstractTensor forward(AbstractTensor input, Optional<Consumer<List<AbstractTensor>>> tensorReducer) {
    if (tensorReducer.isPresent())
      throw new UnsupportedOperationException("MoeRouterFeedForward: distributed jlama (a tensor reducer) is not supported");
    int tokens = input.shape().first();
    if (input.shape().last() != dim)
      throw new IllegalArgumentException("layer " + layer + ": input is " + input.shape() + ", expected [T, " + dim + "]");
    if (!ExpertScratch.gatherable(input))
      throw new IllegalArgumentException("layer " + layer + ": matmul inputs of type " + input.dType() + " are not supported"
          + " (fp32 or bf16: load with Precision.CHECKPOINT or FP32)");
    grow(tokens);
    gateLogits(input, tokens);
    model.router().route(layer, logits, tokens, idx, weights);
    groupByExpert(tokens);
    AbstractTensor out = model.makeTensor(tokens, dim);  // jlama's cache hands out zeroed tensors
    ExpertScratch scratch = model.expertScratch();
    scratch.ensure(maxRows(), input.dType());
    for (int e = 0; e < experts; e++) {
      int from = rowStart[e], n = rowStart[e + 1] - from;
      if (n == 0) continue;
      AbstractTensor y = expert(e, scratch.gather(input, rowToken, from, n), n, scratch);
      for (int j = 0; j < n; j++) combine(out, rowToken[from + j], rowSlot[from + j], y.slice(j));
    }
    return out;
  }

  /** Gate logits [tokens, E] into {@link #logits}, with the kernel MoEBlock uses (one dot product per entry). */
  private void gateLogits(AbstractTensor input, int tokens) {
    TensorOperations ops = TensorOperationsProvider.get();
    try (AbstractTensor g = model.makeTensor(tokens, experts)) {
      VectorMath.pchunk(0, experts, (start, n) -> ops.dotProductChunk(g, input, gate, 0, dim, start, n));
      MemorySegment.copy(g.getMemorySegment(), F32_LE, g.getMemorySegmentOffset(0), logits, 0, tokens * experts);
    }
  }

  /** Counting sort of the (token, slot) pairs by expert: rows of expert e are [rowStart[e], rowStart[e+1]). */
  private void groupByExpert(int tokens) {
    Arrays.fill(rowStart, 0);
    int n = tokens * topK;
    for (int i = 0; i < n; i++) rowStart[idx[i] + 1]++;
    for (int e = 0; e < experts; e++) rowStart[e + 1] += rowStart[e];
    System.arraycopy(rowStart, 0, rowCursor, 0, experts);
    for (int t = 0; t < tokens; t++)
      for (int s = 0; s < topK; s++) {
        int r = rowCursor[idx[t * topK + s]]++;
        rowToken[r] = t;
        rowSlot[r] = s;
      }
  }

  private int maxRows() {
    int m = 0;
    for (int e = 0; e < experts; e++) m = Math.max(m, rowStart[e + 1] - rowStart[e]);
    return m;
  }

  /** Expert e on x [n, D]: {@code w2(act(w1 x) * (w3 x))} into the scratch output [n, D], returned. */
  private AbstractTensor expert(int e, AbstractTensor x, int n, ExpertScratch scratch) {
    TensorOperations ops = TensorOperationsProvider.get();
    FloatBufferTensor h1 = scratch.up1(n), h3 = scratch.up3(n);
    upResults[0] = h1;
    upResults[1] = h3;
    upWeights[0] = w1[e];
    upWeights[1] = w3[e];
    VectorMath.pchunk(0, hidden, (start, len) -> ops.dotProductBatchChunk(upResults, x, upWeights, 0, dim, start, len));
    activate(h1, n);
    ops.maccumulate(h1, h3, 0, hidden);
    FloatBufferTensor y = scratch.output(n);
    AbstractTensor hq = model.matmulInput(h1);
    try {
      VectorMath.pchunk(0, dim, (start, len) -> ops.dotProductChunk(y, hq, w2[e], 0, hidden, start, len));
    } finally {
      if (hq != h1) hq.close();
    }
    return y;
  }

  /** The activation of jlama ({@code ActivationFunction.eval}) over h [n, F], in place. */
  private void activate(FloatBufferTensor h, int n) {
    FloatBuffer b = (FloatBuffer) h.getMemorySegment().asByteBuffer().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
    VectorMath.pchunk(0, n * hidden, (start, len) -> {
      for (int i = start; i < start + len; i++) b.put(i, ActivationFunction.eval(activation, b.get(i)));
    });
  }

  private void combine(AbstractTensor out, int t, int slot, AbstractTensor expertRow) {
    TensorOperations ops = TensorOperationsProvider.get();
    if (model.combine() == Combine.UNWEIGHTED) ops.accumulate(out.slice(t), expertRow, 0, dim);
    else ops.saxpy(weights[t * topK + slot], expertRow, out.slice(t), 0, 0, dim);
  }

  private void grow(int tokens) {
    int te = Math.multiplyExact(tokens, experts), tk = Math.multiplyExact(tokens, topK);
    if (logits.length < te) logits = new float[te];
    if (idx.length < tk) {
      idx = new int[tk];
      weights = new float[tk];
      rowToken = new int[tk];
      rowSlot = new int[tk];
    }
  }

  /** jlama's own MoEBlock over this layer's tensors (the parity tests' and the benchmark's reference). */
  public MoEBlock jlamaMoEBlock() {
    return new MoEBlock(model, experts, topK, activation, gate, w1, w2, w3);
  }

  /** The gate logits [T, E] of {@code input} [T, D], as this layer computes them, into a new array. */
  public float[] gateLogits(AbstractTensor input) {
    int tokens = input.shape().first();
    grow(tokens);
    gateLogits(input, tokens);
    return Arrays.copyOf(logits, tokens * experts);
  }

  @Override
  public String toString() {
    return "MoeRouterFeedForward{layer=" + layer + ", experts=" + experts + ", topK=" + topK + "}";
  }
}
