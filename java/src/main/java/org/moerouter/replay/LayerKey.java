// SPDX-License-Identifier: Apache-2.0
package org.moerouter.replay;

import java.util.Objects;

/**
 * A MoE layer's identity: its {@link LayerKind} and its number within that kind. Replay data is matched to
 * layers by key, never by position alone, so an MTP layer numbered like a decoder layer never receives the
 * decoder layer's indices. Immutable; ordered decoder layers first, then by number.
 *
 * <pre>{@code
 * registry.addLayer(LayerKey.decoder(3), config);
 * registry.addLayer(LayerKey.mtp(0), config, true);
 * LayerKey[] keys = trace.layerKeys();   // decoder layers, then MTP layers
 * }</pre>
 */
public final class LayerKey implements Comparable<LayerKey> {
  private final LayerKind kind;
  private final int number;

  private LayerKey(LayerKind kind, int number) {
    this.kind = Objects.requireNonNull(kind, "kind");
    this.number = number;
  }

  /**
   * The key of layer {@code number} of the given kind.
   *
   * @param kind decoder or MTP
   * @param number the layer's number within its kind (any int)
   * @return the key
   * @throws NullPointerException when kind is null
   */
  public static LayerKey of(LayerKind kind, int number) {
    return new LayerKey(kind, number);
  }

  /**
   * Decoder MoE layer {@code number}.
   *
   * @param number any int; model layer numbers are usually 0- or 1-based
   * @return the key
   */
  public static LayerKey decoder(int number) {
    return new LayerKey(LayerKind.DECODER, number);
  }

  /**
   * Multi-token-prediction MoE layer {@code number}.
   *
   * @param number the layer's number among the MTP layers
   * @return the key
   */
  public static LayerKey mtp(int number) {
    return new LayerKey(LayerKind.MTP, number);
  }

  /**
   * Decoder keys for the given layer numbers, in order.
   *
   * @param numbers decoder layer numbers
   * @return a new array of keys, one per number
   */
  public static LayerKey[] decoders(int... numbers) {
    LayerKey[] out = new LayerKey[numbers.length];
    for (int i = 0; i < numbers.length; i++) out[i] = decoder(numbers[i]);
    return out;
  }

  /**
   * The layer's kind.
   *
   * @return decoder or MTP
   */
  public LayerKind kind() {
    return kind;
  }

  /**
   * The layer's number within its kind.
   *
   * @return the number given when the key was made
   */
  public int number() {
    return number;
  }

  /**
   * Orders decoder layers before MTP layers, then by number.
   *
   * @param o another key
   * @return negative, zero or positive as this key sorts before, with or after {@code o}
   */
  @Override
  public int compareTo(LayerKey o) {
    int c = kind.compareTo(o.kind);
    return c != 0 ? c : Integer.compare(number, o.number);
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof LayerKey && ((LayerKey) o).kind == kind && ((LayerKey) o).number == number;
  }

  @Override
  public int hashCode() {
    return kind.hashCode() * 31 + number;
  }

  /** "decoder layer 3" or "MTP layer 0", as used in error messages. */
  @Override
  public String toString() {
    return (kind == LayerKind.DECODER ? "decoder" : "MTP") + " layer " + number;
  }
}
