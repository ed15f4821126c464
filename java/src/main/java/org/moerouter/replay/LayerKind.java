// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

/**
 * The two kinds of MoE layers a replay registry or a trace distinguishes: the decoder's layers and the
 * multi-token-prediction layers, which Megatron builds after the decoder with their own routers (and their
 * own {@code RouterReplay} instances). Layer numbers are per kind, so MTP layer 1 and decoder layer 1 are
 * different layers.
 */
public enum LayerKind {
  /** A MoE layer of the decoder. */
  DECODER,
  /** A MoE layer of a multi-token-prediction block. */
  MTP;

  /**
   * Lower-case name as written in trace metadata and messages.
   *
   * @return "decoder" or "mtp"
   */
  public String label() {
    return this == DECODER ? "decoder" : "mtp";
  }
}
