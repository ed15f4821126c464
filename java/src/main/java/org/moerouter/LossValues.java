// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

/**
 * What a {@link MoeRouter#losses} call computed: the loss values, N and the aux-map counts c. Mutable and
 * reusable, so that a training step allocates nothing: each call overwrites every field. Not thread-safe:
 * one per thread (or per layer) that calls {@code losses}.
 */
public final class LossValues {
  private final int[] auxTokensPerExpert;
  double auxLoss, seqAuxLoss, globalAuxLoss, zLoss;
  long validTokens;
  /** The native call's values {aux, seq aux, global aux, z, N}: no allocation per call. */
  final double[] raw = new double[5];

  /**
   * Values for routers of {@code experts} experts; every value 0 until a call fills them.
   *
   * @param experts E, in {@code [1, RouterConfig.MAX_EXPERTS]}; a {@code losses} call rejects values of
   *     another E
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when experts is out of range
   */
  public LossValues(int experts) {
    if (experts < 1 || experts > RouterConfig.MAX_EXPERTS)
      throw MoeRouter.invalid("experts must be in [1, " + RouterConfig.MAX_EXPERTS + "], got " + experts);
    auxTokensPerExpert = new int[experts];
  }

  /**
   * Switch load-balancing loss of the last call.
   *
   * @return the loss; 0 when off or N = 0
   */
  public double auxLoss() {
    return auxLoss;
  }

  /**
   * Sequence aux loss of the last call.
   *
   * @return the loss; 0 when off or N = 0
   */
  public double seqAuxLoss() {
    return seqAuxLoss;
  }

  /**
   * Global aux loss of the last call.
   *
   * @return the loss; 0 when off, N = 0 or Ng = 0
   */
  public double globalAuxLoss() {
    return globalAuxLoss;
  }

  /**
   * Router z-loss of the last call.
   *
   * @return the loss; 0 when off or N = 0
   */
  public double zLoss() {
    return zLoss;
  }

  /**
   * The sum of the four losses: what the gradient that the call added is the gradient of.
   *
   * @return aux + seq aux + global aux + z
   */
  public double total() {
    return auxLoss + seqAuxLoss + globalAuxLoss + zLoss;
  }

  /**
   * N, the valid rows of the last call.
   *
   * @return N, {@code >= 0}
   */
  public long validTokens() {
    return validTokens;
  }

  /**
   * c [E]: the plain top-k (aux) map's counts over the valid rows of the last call, what the ranks sum into
   * the global counts of {@link GlobalAuxTracker#add(int[])}.
   *
   * @return this object's array (not a copy): the next call overwrites it
   */
  public int[] auxTokensPerExpert() {
    return auxTokensPerExpert;
  }

  int experts() {
    return auxTokensPerExpert.length;
  }

  @Override
  public String toString() {
    return "LossValues{aux=" + auxLoss + ", seqAux=" + seqAuxLoss + ", globalAux=" + globalAuxLoss + ", z=" + zLoss
        + ", validTokens=" + validTokens + "}";
  }
}
