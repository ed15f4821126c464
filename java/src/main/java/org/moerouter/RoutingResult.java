// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * Routing of a batch, as the allocating {@code MoeRouter.route(float[], int)} and
 * {@code MoeRouter.replay(float[], int, int[], byte[])} return it: expert indices [tokens, k] and weights
 * [tokens, k], row-major, the non-finite row count and per-row flags.
 *
 * <pre>{@code
 * RoutingResult r = router.route(logits, tokens);
 * int e = r.expert(t, 0);         // the best expert of token t
 * float w = r.weight(t, 0);       // its weight
 * router.backward(logits, tokens, r.indices(), dW, r.nonfiniteRowFlags(), dL);
 * }</pre>
 *
 * <p>Traps: the arrays are the result's own, returned without a copy, so writing into them changes the
 * result; callers that need isolation copy them. Hot loops should use the overloads that write into
 * caller-provided arrays instead: this class allocates per call.
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

  /**
   * Tokens routed.
   *
   * @return T, the rows of {@link #indices()} and {@link #weights()}
   */
  public int tokens() {
    return tokens;
  }

  /**
   * Experts per token.
   *
   * @return k, the columns of {@link #indices()} and {@link #weights()}
   */
  public int topK() {
    return topK;
  }

  /**
   * Expert indices [tokens, k], row-major, each row sorted by ranking key, best first (replay: the order
   * given).
   *
   * @return the result's own array (not a copy)
   */
  public int[] indices() {
    return indices;
  }

  /**
   * Weights [tokens, k], row-major, in the order of {@link #indices()}.
   *
   * @return the result's own array (not a copy)
   */
  public float[] weights() {
    return weights;
  }

  /**
   * One selected expert.
   *
   * @param token the row, in {@code [0, tokens())}
   * @param slot the position within the row, in {@code [0, topK())}; 0 is the best expert
   * @return the expert index, in {@code [0, E)}
   * @throws IndexOutOfBoundsException when token or slot is outside the result
   */
  public int expert(int token, int slot) {
    return indices[checkIndex(token, slot)];
  }

  /**
   * The weight of one selected expert.
   *
   * @param token the row, in {@code [0, tokens())}
   * @param slot the position within the row, in {@code [0, topK())}
   * @return the weight of {@link #expert(int, int) expert(token, slot)}
   * @throws IndexOutOfBoundsException when token or slot is outside the result
   */
  public float weight(int token, int slot) {
    return weights[checkIndex(token, slot)];
  }

  /**
   * Rows in which a logit that was read is NaN or infinite (docs/semantics.md section 2).
   *
   * @return the count; 0 when every read logit was finite
   */
  public long nonfiniteRows() {
    return nonfiniteRows;
  }

  /**
   * Per row [tokens]: 1 where a logit that was read is NaN or infinite, else 0 (the result's own array).
   * What {@link MoeRouter#backward(float[], int, int[], float[], byte[], float[])} takes under
   * {@link NonFinitePolicy#ZERO}.
   *
   * @return the flags [tokens], or null where the router does not produce them
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
