// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.util.Objects;

/**
 * Which router losses a {@link MoeRouter#losses} call computes (docs/semantics.md section 6): immutable,
 * validated when built. A coefficient of 0 (the default) leaves a loss out; coefficients must be finite
 * and {@code >= 0}.
 *
 * <pre>{@code
 * LossConfig losses = LossConfig.builder()
 *     .auxLoss(1e-2f)                                  // Megatron moe_aux_loss_coeff, load_balancing_type aux_loss
 *     .seqAuxLoss(1e-3f, seqLength, SeqLayout.SB)      // seq_aux_loss: tokens = seqLength * batch
 *     .globalAuxLoss(1e-2f)                            // global_aux_loss, with G and Ng per call
 *     .zLoss(1e-3f)                                    // moe_z_loss_coeff
 *     .build();
 * }</pre>
 *
 * <p>Megatron's per-rank scalings (the z-loss {@code coeff / (tp * cp)}, the per-token-loss multipliers,
 * {@code 1 / mtp_num_layers}) are the caller's: fold them into the coefficients. The native library checks
 * the same rules with the same texts ({@code moe_losses_host}).
 */
public final class LossConfig {
  private final float auxCoeff;
  private final float seqAuxCoeff;
  private final int seqLength;
  private final SeqLayout seqLayout;
  private final float globalAuxCoeff;
  private final float zCoeff;

  private LossConfig(Builder b) {
    auxCoeff = b.auxCoeff;
    seqAuxCoeff = b.seqAuxCoeff;
    seqLength = b.seqAuxCoeff > 0f ? b.seqLength : 0;
    seqLayout = b.seqLayout;
    globalAuxCoeff = b.globalAuxCoeff;
    zCoeff = b.zCoeff;
  }

  /**
   * A builder with every loss off (coefficients 0) and the sequence layout {@link SeqLayout#SB}.
   *
   * @return a new builder
   */
  public static Builder builder() {
    return new Builder();
  }

  /**
   * Switch load-balancing loss coefficient.
   *
   * @return the coefficient, {@code >= 0}; 0 when the loss is off
   */
  public float auxCoeff() {
    return auxCoeff;
  }

  /**
   * Sequence aux loss coefficient.
   *
   * @return the coefficient, {@code >= 0}; 0 when the loss is off
   */
  public float seqAuxCoeff() {
    return seqAuxCoeff;
  }

  /**
   * Sq, the length of the sequences of the sequence aux loss.
   *
   * @return Sq {@code >= 1}, or 0 when the sequence loss is off (whatever the builder was given)
   */
  public int seqLength() {
    return seqLength;
  }

  /**
   * How the rows of a call form sequences for the sequence aux loss.
   *
   * @return the layout given to {@link Builder#seqAuxLoss}, else {@link SeqLayout#SB}
   */
  public SeqLayout seqLayout() {
    return seqLayout;
  }

  /**
   * Global aux loss coefficient.
   *
   * @return the coefficient, {@code >= 0}; 0 when the loss is off
   */
  public float globalAuxCoeff() {
    return globalAuxCoeff;
  }

  /**
   * Router z-loss coefficient.
   *
   * @return the coefficient, {@code >= 0}; 0 when the loss is off
   */
  public float zCoeff() {
    return zCoeff;
  }

  @Override
  public boolean equals(Object o) {
    if (!(o instanceof LossConfig)) return false;
    LossConfig c = (LossConfig) o;
    return Float.compare(auxCoeff, c.auxCoeff) == 0 && Float.compare(seqAuxCoeff, c.seqAuxCoeff) == 0
        && seqLength == c.seqLength && seqLayout == c.seqLayout && Float.compare(globalAuxCoeff, c.globalAuxCoeff) == 0
        && Float.compare(zCoeff, c.zCoeff) == 0;
  }

  @Override
  public int hashCode() {
    return Objects.hash(auxCoeff, seqAuxCoeff, seqLength, seqLayout, globalAuxCoeff, zCoeff);
  }

  @Override
  public String toString() {
    StringBuilder s = new StringBuilder("LossConfig{");
    if (auxCoeff != 0f) s.append("aux=").append(auxCoeff).append(", ");
    if (seqAuxCoeff != 0f)
      s.append("seqAux=").append(seqAuxCoeff).append(" (Sq=").append(seqLength).append(' ').append(seqLayout).append("), ");
    if (globalAuxCoeff != 0f) s.append("globalAux=").append(globalAuxCoeff).append(", ");
    if (zCoeff != 0f) s.append("z=").append(zCoeff).append(", ");
    if (s.charAt(s.length() - 1) == ' ') s.setLength(s.length() - 2);
    return s.append('}').toString();
  }

  /** Builder; {@link #build()} checks every rule and names the one that fails. */
  public static final class Builder {
    private float auxCoeff;
    private float seqAuxCoeff;
    private int seqLength;
    private SeqLayout seqLayout = SeqLayout.SB;
    private float globalAuxCoeff;
    private float zCoeff;

    private Builder() {}

    /**
     * Switch load-balancing loss {@code coeff * E / (k N^2) * sum_i c_i sum_t A[t, i]} over the call's N
     * valid tokens (Megatron {@code aux_loss}).
     *
     * @param coeff finite, {@code >= 0}; 0 turns it off
     * @return this builder
     */
    public Builder auxLoss(float coeff) {
      this.auxCoeff = coeff;
      return this;
    }

    /**
     * Sequence aux loss (DeepSeek-V2/V3 {@code seq_aux_loss}): the call's tokens are B sequences of
     * {@code seqLength} rows laid out as {@code layout}; every call's token count must be a multiple of
     * seqLength.
     *
     * @param coeff finite, {@code >= 0}; 0 turns it off
     * @param seqLength Sq, {@code >= 1} when the loss is on
     * @param layout {@link SeqLayout#SB} (Megatron) or {@link SeqLayout#BS} (HF DeepSeek)
     * @return this builder
     * @throws NullPointerException when layout is null
     */
    public Builder seqAuxLoss(float coeff, int seqLength, SeqLayout layout) {
      this.seqAuxCoeff = coeff;
      this.seqLength = seqLength;
      this.seqLayout = Objects.requireNonNull(layout, "layout");
      return this;
    }

    /**
     * Global aux loss (Megatron {@code global_aux_loss}) from the averaged global counts G and this
     * micro-batch's global token count Ng passed with each call ({@link GlobalAuxTracker} keeps them).
     *
     * @param coeff finite, {@code >= 0}; 0 turns it off
     * @return this builder
     */
    public Builder globalAuxLoss(float coeff) {
      this.globalAuxCoeff = coeff;
      return this;
    }

    /**
     * Router z-loss {@code coeff * sum_t v_t lse_t^2 / max(N, 1)} (Megatron {@code moe_z_loss_coeff}).
     *
     * @param coeff finite, {@code >= 0}; 0 turns it off
     * @return this builder
     */
    public Builder zLoss(float coeff) {
      this.zCoeff = coeff;
      return this;
    }

    /**
     * Checks every rule and builds: the same rules, order and texts as {@code moe_losses_host}
     * (moe_api_training.cpp).
     *
     * @return the immutable configuration
     * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} naming the loss whose coefficient is negative
     *     or not finite, or a sequence length below 1 with the sequence loss on
     */
    public LossConfig build() {
      coeff("aux loss", auxCoeff);
      coeff("seq aux loss", seqAuxCoeff);
      coeff("global aux loss", globalAuxCoeff);
      coeff("z-loss", zCoeff);
      if (seqAuxCoeff > 0f && seqLength < 1) throw invalid("seq aux loss needs a seq length >= 1, got " + seqLength);
      return new LossConfig(this);
    }

    private static void coeff(String loss, float c) {
      if (!(c >= 0f) || !Float.isFinite(c))
        throw invalid(loss + " coefficient must be finite and >= 0, got " + RouterConfig.Builder.gFormat(c));
    }

    private static MoeRouterException invalid(String message) {
      return new MoeRouterException(Status.INVALID_ARGUMENT, "invalid loss config: " + message);
    }
  }
}
