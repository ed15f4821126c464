// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * Routing of a batch: expert indices [tokens, k] and weights [tokens, k], row-major.
 * The arrays are the result's own (no copy); callers that need isolation copy them.
 */
public final class RoutingResult {
  private final int tokens;
  private final int topK;
  private final int[] indices;
  private final float[] weights;
  private final long nonfiniteRows;
  private final byte[] nonfiniteRowFlags;

  RoutingResult(int tokens, int topK, int[] indices, float[] weights, long nonfiniteRows, byte[] nonfiniteRowFlags) {
    this.tokens = tokens;
    this.topK = topK;
    this.indices = indices;
    this.weights = weights;
    this.nonfiniteRows = nonfiniteRows;
    this.nonfiniteRowFlags = nonfiniteRowFlags;
  }

  public int tokens() {
    return tokens;
  }

  public int topK() {
    return topK;
  }

  /** Expert indices [tokens, k], row-major. */
  public int[] indices() {
    return indices;
  }

  /** Weights [tokens, k], row-major. */
  public float[] weights() {
    return weights;
  }

  public int expert(int token, int slot) {
    return indices[checkIndex(token, slot)];
  }

  public float weight(int token, int slot) {
    return weights[checkIndex(token, slot)];
  }

  /** Rows in which a logit that was read is NaN or infinite. */
  public long nonfiniteRows() {
    return nonfiniteRows;
  }

  /**
   * Per row [tokens]: 1 where a logit that was read is NaN or infinite, else 0 (the result's own array);
   * null from CUDA routers, whose kernels do not write per-row flags yet.
   * What {@link MoeRouter#backward(float[], int, int[], float[], byte[], float[])} takes under
   * {@link NonFinitePolicy#ZERO}.
   */
  public byte[] nonfiniteRowFlags() {
    return nonfiniteRowFlags;
  }

  private int checkIndex(int token, int slot) {
    if (token < 0 || token >= tokens || slot < 0 || slot >= topK)
      throw new IndexOutOfBoundsException("token " + token + ", slot " + slot + " outside [" + tokens + ", " + topK + "]");
    return token * topK + slot;
  }
}
