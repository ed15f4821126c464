// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Objects;
import org.moerouter.replay.LayerKey;

/**
 * Aligns recorded routing with how a trainer batches tokens: packed sequences (cu_seqlens), padding
 * rows, micro-batch splits.
 *
 * <p>Padding rows get the valid, distinct set {@code 0 .. k-1} (never duplicate indices, which replay
 * rejects) and mask 0 so that {@code MoeRouter.replay} routes them live; so do rows the trace's own mask
 * marks as not recorded.
 *
 * <pre>{@code
 * for (int[] mb : TraceSlicing.microBatchesByTokens(trace, 8192)) {
 *   TraceSlicing.Packed p = TraceSlicing.pack(trace, mb, TraceSlicing.cuSeqlens(trace, mb), 0, trace.layers());
 *   registry.setReplayData(p.indices(), p.shape(), p.layerKeys(), p.mask());
 *   // forward and backward of the micro-batch
 * }
 * }</pre>
 *
 * <p>Trap: replay must pass the packed mask along: the padding rows hold placeholders, not routing.
 */
public final class TraceSlicing {
  private TraceSlicing() {}

  /** Replay input for one packed micro-batch: indices [tokens, layers, k] and mask [tokens] (1 = replay). */
  public static final class Packed {
    private final int tokens;
    private final int k;
    private final int[] layerIds;
    private final LayerKey[] keys;
    private final int[] indices;
    private final byte[] mask;

    Packed(int tokens, int k, LayerKey[] keys, int[] indices, byte[] mask) {
      this.tokens = tokens;
      this.k = k;
      this.keys = keys;
      this.layerIds = new int[keys.length];
      for (int i = 0; i < keys.length; i++) layerIds[i] = keys[i].number();
      this.indices = indices;
      this.mask = mask;
    }

    /**
     * Rows of the packed sequence, padding included.
     *
     * @return the last {@code cu_seqlens} entry
     */
    public int tokens() {
      return tokens;
    }

    /**
     * Experts per token and layer.
     *
     * @return k
     */
    public int topK() {
      return k;
    }

    /**
     * Layers packed.
     *
     * @return the number of layer positions
     */
    public int layers() {
      return layerIds.length;
    }

    /**
     * Model layer ids of the packed layers.
     *
     * @return a new array [layers()]
     */
    public int[] layerIds() {
      return layerIds.clone();
    }

    /**
     * Keys (kind and number) of the packed layers, for {@code ReplayRegistry.setReplayData}.
     *
     * @return a new array [layers()]
     */
    public LayerKey[] layerKeys() {
      return keys.clone();
    }

    /**
     * The shape of {@link #indices()}.
     *
     * @return a new array {@code [tokens, layers, k]}
     */
    public long[] shape() {
      return new long[] {tokens, layerIds.length, k};
    }

    /**
     * The packed indices [tokens, layers, k].
     *
     * @return the packed array itself (not a copy)
     */
    public int[] indices() {
      return indices;
    }

    /**
     * The replay mask [tokens].
     *
     * @return the array itself: 1 for recorded rows, 0 for padding and rows the trace did not record (route live)
     */
    public byte[] mask() {
      return mask;
    }

    /**
     * One layer as a new [tokens, k] array, for {@code RouterReplay.setTargetIndices}.
     *
     * @param position a layer position, in {@code [0, layers())}
     * @return a new array [tokens, k]
     * @throws org.moerouter.MoeRouterException when the position is out of range
     */
    public int[] layer(int position) {
      if (position < 0 || position >= layerIds.length) throw RoutingTrace.invalid("layer position " + position + " outside [0, " + layerIds.length + ")");
      int[] out = new int[tokens * k];
      int w = layerIds.length * k;
      for (int t = 0; t < tokens; t++) System.arraycopy(indices, t * w + position * k, out, t * k, k);
      return out;
    }
  }

  /**
   * Packs samples into one sequence laid out by {@code cuSeqlens} (length samples.length + 1, from 0,
   * non-decreasing): sample {@code samples[i]} fills rows {@code cuSeqlens[i] ..} and the rest of its
   * segment up to {@code cuSeqlens[i+1]} is padding. Layers {@code [layerFrom, layerTo)} (positions).
   *
   * @param trace the recorded routing
   * @param samples the samples to pack, in segment order
   * @param cuSeqlens segment boundaries [samples.length + 1], from 0, non-decreasing
   * @param layerFrom first layer position
   * @param layerTo end layer position (exclusive), at most {@code trace.layers()}
   * @return the packed indices and mask
   * @throws org.moerouter.MoeRouterException when a sample is longer than its segment, or for bad boundaries or
   *     layer range
   */
  public static Packed pack(RoutingTrace trace, int[] samples, int[] cuSeqlens, int layerFrom, int layerTo) {
    Objects.requireNonNull(trace, "trace");
    Objects.requireNonNull(samples, "samples");
    Objects.requireNonNull(cuSeqlens, "cuSeqlens");
    if (cuSeqlens.length != samples.length + 1)
      throw RoutingTrace.invalid("cu_seqlens has " + cuSeqlens.length + " entries for " + samples.length + " samples (needs samples + 1)");
    if (cuSeqlens[0] != 0) throw RoutingTrace.invalid("cu_seqlens[0] must be 0, got " + cuSeqlens[0]);
    if (layerFrom < 0 || layerTo <= layerFrom || layerTo > trace.layers())
      throw RoutingTrace.invalid("layer range [" + layerFrom + ", " + layerTo + ") outside [0, " + trace.layers() + ")");
    int k = trace.topK();
    int nl = layerTo - layerFrom;
    int w = nl * k;
    int total = cuSeqlens[samples.length];
    for (int i = 0; i < samples.length; i++) {
      int seg = cuSeqlens[i + 1] - cuSeqlens[i];
      if (seg < 0) throw RoutingTrace.invalid("cu_seqlens decreases at " + (i + 1));
      int len = trace.sampleTokens(samples[i]);
      if (len > seg)
        throw RoutingTrace.invalid("sample " + samples[i] + " has " + len + " tokens, its packed segment " + i + " ["
            + cuSeqlens[i] + ", " + cuSeqlens[i + 1] + ") holds " + seg);
    }
    int[] idx = new int[Math.multiplyExact(total, w)];
    byte[] mask = new byte[total];
    for (int i = 0; i < samples.length; i++) {
      int start = cuSeqlens[i];
      int len = trace.sampleTokens(samples[i]);
      trace.copySample(samples[i], layerFrom, layerTo, idx, start * w);
      trace.copyMask(trace.sampleOffset(samples[i]), trace.sampleOffset(samples[i]) + len, mask, start);
      padRows(idx, (start + len) * nl, cuSeqlens[i + 1] * nl, k);
    }
    return new Packed(total, k, Arrays.copyOfRange(trace.layerKeys(), layerFrom, layerTo), idx, mask);
  }

  /**
   * Fills rows {@code [rowFrom, rowTo)} of k indices with {@code 0 .. k-1}: valid, distinct placeholders.
   *
   * @param indices rows of k ints
   * @param rowFrom first row
   * @param rowTo end row (exclusive)
   * @param k ints per row
   * @throws ArrayIndexOutOfBoundsException when the rows run past the array
   */
  public static void padRows(int[] indices, int rowFrom, int rowTo, int k) {
    for (int r = rowFrom; r < rowTo; r++)
      for (int j = 0; j < k; j++) indices[r * k + j] = j;
  }

  /**
   * Splits the samples into consecutive micro-batches of {@code samplesPerMicroBatch} (the last may be shorter).
   *
   * @param trace the recorded routing
   * @param samplesPerMicroBatch samples per micro-batch, {@code >= 1}
   * @return one array of sample numbers per micro-batch
   * @throws org.moerouter.MoeRouterException when samplesPerMicroBatch is below 1
   */
  public static int[][] microBatches(RoutingTrace trace, int samplesPerMicroBatch) {
    if (samplesPerMicroBatch < 1) throw RoutingTrace.invalid("samples per micro-batch must be >= 1, got " + samplesPerMicroBatch);
    int n = trace.samples();
    int[][] out = new int[(n + samplesPerMicroBatch - 1) / samplesPerMicroBatch][];
    for (int m = 0; m < out.length; m++) {
      int from = m * samplesPerMicroBatch, to = Math.min(n, from + samplesPerMicroBatch);
      out[m] = new int[to - from];
      for (int i = from; i < to; i++) out[m][i - from] = i;
    }
    return out;
  }

  /**
   * Splits the samples, in order, into micro-batches of at most {@code maxTokens} tokens each (dynamic
   * batching); a sample longer than {@code maxTokens} is rejected.
   *
   * @param trace the recorded routing
   * @param maxTokens the token budget of a micro-batch, {@code >= 1}
   * @return one array of sample numbers per micro-batch
   * @throws org.moerouter.MoeRouterException when maxTokens is below 1 or a sample exceeds it
   */
  public static int[][] microBatchesByTokens(RoutingTrace trace, long maxTokens) {
    if (maxTokens < 1) throw RoutingTrace.invalid("max tokens per micro-batch must be >= 1, got " + maxTokens);
    List<int[]> out = new ArrayList<>();
    List<Integer> cur = new ArrayList<>();
    long used = 0;
    for (int s = 0; s < trace.samples(); s++) {
      int len = trace.sampleTokens(s);
      if (len > maxTokens) throw RoutingTrace.invalid("sample " + s + " has " + len + " tokens, more than " + maxTokens + " per micro-batch");
      if (used + len > maxTokens && !cur.isEmpty()) {
        out.add(cur.stream().mapToInt(Integer::intValue).toArray());
        cur.clear();
        used = 0;
      }
      cur.add(s);
      used += len;
    }
    if (!cur.isEmpty()) out.add(cur.stream().mapToInt(Integer::intValue).toArray());
    return out.toArray(new int[0][]);
  }

  /**
   * cu_seqlens of the given samples packed back to back without padding.
   *
   * @param trace the recorded routing
   * @param samples the samples, in packing order
   * @return [samples.length + 1] boundaries from 0
   * @throws ArithmeticException when the total exceeds {@code Integer.MAX_VALUE} tokens
   */
  public static int[] cuSeqlens(RoutingTrace trace, int[] samples) {
    int[] cu = new int[samples.length + 1];
    for (int i = 0; i < samples.length; i++) cu[i + 1] = Math.addExact(cu[i], trace.sampleTokens(samples[i]));
    return cu;
  }
}
