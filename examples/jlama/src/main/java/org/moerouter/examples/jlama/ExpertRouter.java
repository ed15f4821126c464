// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

/**
 * Routing step of one MoE layer of {@link MoeRouterFeedForward}: gate logits [tokens, E] (fp32, row-major)
 * in, the k experts of each token and their combine weights out ([tokens, k] each, written in full).
 * {@link MixtralRouting} routes with moe-router (live, recording or replaying); {@link JlamaTopK} runs
 * jlama's own softmax and top-k, the baseline of the benchmark and of the parity tests.
 */
public interface ExpertRouter {
  void route(int layer, float[] logits, int tokens, int[] outIdx, float[] outWeights);
}
