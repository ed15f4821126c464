// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import com.github.tjake.jlama.math.ActivationFunction;
import com.github.tjake.jlama.math.VectorMath;
import com.github.tjake.jlama.model.AbstractModel;
import com.github.tjake.jlama.model.MoEBlock;
import com.github.tjake.jlama.tensor.AbstractTensor;
import com.github.tjake.jlama.tensor.FloatBufferTensor;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.MethodType;

/**
 * jlama's own Mixtral routing, per token exactly as {@code MoEBlock.forward} does it: the gate results go
 * into a [1, E] tensor, {@code VectorMath.softMax} over all experts, then MoEBlock's private top-k (called
 * through a method handle on a real MoEBlock, so it is jlama's code, not a copy). jlama 0.8.4 stops
 * there (it sums the expert outputs unweighted: tjake/Jlama#201); the weights here are the k selected
 * probabilities renormalised, as Mixtral defines them, so both routers produce the same outputs.
 * Experts come in jlama's order (replacement order of its selection), not sorted.
 *
 * <p>The baseline for the routing-share benchmark and the reference for the parity tests. Not thread-safe
 * (MoEBlock's selection writes into the block's own array).
 */
public final class JlamaTopK implements ExpertRouter {
  private static final MethodHandle TOPK;

  static {
    try {
      TOPK = MethodHandles.privateLookupIn(MoEBlock.class, MethodHandles.lookup())
          .findVirtual(MoEBlock.class, "topk", MethodType.methodType(int[].class, FloatBufferTensor.class));
    } catch (ReflectiveOperationException e) {
      throw new ExceptionInInitializerError("jlama's MoEBlock.topk(FloatBufferTensor) not found: this example is written"
          + " against jlama-core 0.8.4 (" + e + ")");
    }
  }

  private final MoEBlock block;
  private final int experts;
  private final int topK;
  private final FloatBufferTensor probs;

  /** A router with E experts, top-k; {@code model} only feeds MoEBlock's constructor (no weight is read). */
  public JlamaTopK(AbstractModel model, int experts, int topK) {
    this.experts = experts;
    this.topK = topK;
    AbstractTensor[] none = new AbstractTensor[experts];
    this.block = new MoEBlock(model, experts, topK, ActivationFunction.Type.SILU, null, none, none, none);
    this.probs = new FloatBufferTensor(experts);
  }

  /** jlama's selection for one token's gate logits {@code logits[off .. off+E)}; returns MoEBlock's own array. */
  public int[] select(float[] logits, int off) {
    for (int e = 0; e < experts; e++) probs.set(logits[off + e], 0, e);
    VectorMath.softMax(probs, 0, experts);
    try {
      return (int[]) TOPK.invokeExact(block, probs);
    } catch (RuntimeException | Error e) {
      throw e;
    } catch (Throwable t) {
      throw new IllegalStateException("MoEBlock.topk failed", t);
    }
  }

  /** jlama's softmax probability of expert {@code e} from the last {@link #select}. */
  public float probability(int e) {
    return probs.get(0, e);
  }

  @Override
  public void route(int layer, float[] logits, int tokens, int[] outIdx, float[] outWeights) {
    for (int t = 0; t < tokens; t++) {
      int[] sel = select(logits, t * experts);
      float sum = 0;
      for (int j = 0; j < topK; j++) sum += probs.get(0, sel[j]);
      for (int j = 0; j < topK; j++) {
        outIdx[t * topK + j] = sel[j];
        outWeights[t * topK + j] = probs.get(0, sel[j]) / sum;
      }
    }
  }
}
