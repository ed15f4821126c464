// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Objects;
import org.moerouter.MoeRouterException;
import org.moerouter.Status;
import org.moerouter.replay.LayerKey;
import org.moerouter.replay.LayerKind;

/**
 * Recorded routing of a batch of samples: for each sample, expert indices [tokens, layers, k], plus
 * the configuration they came from (model, E, k, MoE layer ids, score function).
 *
 * <p>Immutable. Indices are stored in the narrowest type (uint8 when E &lt;= 256, else uint16) either
 * on the heap ({@link Builder}) or memory-mapped from a file ({@link TraceFiles#open(Path)}), in which
 * case accessors read only the pages they touch: a pipeline stage or data-parallel rank copies just
 * its samples and layers. Layers are addressed by their position {@code 0 .. layers()-1} in
 * {@link #layerIds()}; {@link #layerIndex(int)} maps a model layer id to its position.
 *
 * <p>Layers have a kind ({@link LayerKind}): decoder layers first, then {@link #mtpLayers()}
 * multi-token-prediction layers (Megatron's creation order), each kind numbered on its own, so
 * {@link #layerKey(int)} and not the number alone identifies a layer.
 *
 * <p>An optional per-token mask ({@link #hasMask()}) marks rows that were not recorded (1 = recorded,
 * 0 = route live): padding rows of miles traces, slime's one-row alignment, verl's unfilled rows. Masked
 * rows hold experts {@code 0 .. k-1} as placeholders, and exporters write each layout's own padding there.
 *
 * <p>Tokens are numbered per sample ({@code token} in {@link #expert}) or globally across the
 * concatenation of all samples ({@link #copyTokens}); sample {@code s} holds global tokens
 * {@code [sampleOffset(s), sampleOffset(s + 1))}.
 *
 * <pre>{@code
 * RoutingTrace t = TraceFiles.open(path);                     // mmap, header checked
 * int[] idx = new int[t.sampleTokens(7) * 2 * t.topK()];
 * t.copySample(7, 4, 6, idx, 0);                              // sample 7, layers 4..5: [tokens, 2, k]
 * }</pre>
 *
 * <p>Traps: {@code layer} arguments are storage positions, not model layer numbers ({@link #layerIndex(int)}
 * converts); a file-backed trace checks each index it returns against E but not the checksum, which
 * {@link #verify()} (and {@link TraceFiles#read(Path)}) checks; and the rows of unrecorded tokens hold
 * placeholders, not routing: consult {@link #hasMask()} before replaying them.
 */
public final class RoutingTrace {
  /** Largest E a trace can store (uint16 indices). */
  public static final int MAX_EXPERTS = 65536;

  private final String model;
  private final int experts;
  private final int topK;
  private final int[] layerIds;
  private final String scoreFunction;
  private final long[] offsets; // [samples + 1], offsets[0] == 0
  private final int mtpLayers; // the last mtpLayers positions of layerIds are MTP layers
  final IndexStore store;
  final ByteBuffer mask; // [store rows], 1 = recorded; null when every row is recorded
  private final long rowBase; // first store row of this trace (views)
  final TraceFiles.Source source; // null unless read from a file (whole file, not a view)

  RoutingTrace(String model, int experts, int topK, int[] layerIds, int mtpLayers, String scoreFunction, long[] offsets,
      IndexStore store, ByteBuffer mask, long rowBase, TraceFiles.Source source) {
    this.model = model;
    this.mtpLayers = mtpLayers;
    this.mask = mask;
    this.experts = experts;
    this.topK = topK;
    this.layerIds = layerIds;
    this.scoreFunction = scoreFunction;
    this.offsets = offsets;
    this.store = store;
    this.rowBase = rowBase;
    this.source = source;
  }

  /**
   * A builder of an in-memory trace of decoder layers.
   *
   * <pre>{@code
   * RoutingTrace.Builder b = RoutingTrace.builder("qwen3-30b-a3b", 128, 8, new int[] {0, 1, 2}, "softmax");
   * b.addSample(idx);            // [tokens, 3, 8]
   * TraceFiles.write(path, b.build());
   * }</pre>
   *
   * @param model a free-form model name, stored in the file
   * @param experts E, in {@code [1, 65536]}
   * @param topK k, in {@code [1, E]}
   * @param layerIds the model's decoder MoE layer ids, in storage order, distinct, at least one
   * @param scoreFunction the router's score function as a name (for example "softmax", "sigmoid"), stored as given
   * @return an empty builder
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad size or a repeated layer id
   */
  public static Builder builder(String model, int experts, int topK, int[] layerIds, String scoreFunction) {
    return new Builder(model, experts, topK, layerIds, 0, scoreFunction);
  }

  /**
   * A builder of an in-memory trace of decoder and MTP layers, in storage order; MTP layers must come after
   * every decoder layer (Megatron builds them last, and {@code set_replay_data} counts them in that order).
   *
   * @param model a free-form model name, stored in the file
   * @param experts E, in {@code [1, 65536]}
   * @param topK k, in {@code [1, E]}
   * @param layers the stored layers in storage order: decoder layers, then MTP layers; distinct within each kind
   * @param scoreFunction the router's score function as a name, stored as given
   * @return an empty builder
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad size, a repeated layer, or a decoder
   *     layer after an MTP layer
   */
  public static Builder builder(String model, int experts, int topK, LayerKey[] layers, String scoreFunction) {
    Objects.requireNonNull(layers, "layers");
    int[] ids = new int[layers.length];
    int mtp = 0;
    for (int i = 0; i < layers.length; i++) {
      LayerKey key = Objects.requireNonNull(layers[i], "layers[" + i + "]");
      ids[i] = key.number();
      if (key.kind() == LayerKind.MTP) mtp++;
      else if (mtp > 0) throw invalid(key + " comes after an MTP layer; decoder layers must come first");
    }
    return new Builder(model, experts, topK, ids, mtp, scoreFunction);
  }

  // ------------------------------------------------------------------ metadata

  /**
   * The model name recorded with the trace.
   *
   * @return the name given to the builder, or read from the file's metadata
   */
  public String model() {
    return model;
  }

  /**
   * Number of experts E of the recorded routers.
   *
   * @return E: every recorded index lies in {@code [0, E)}
   */
  public int experts() {
    return experts;
  }

  /**
   * Experts per token and layer.
   *
   * @return k
   */
  public int topK() {
    return topK;
  }

  /**
   * Number of MoE layers stored per token.
   *
   * @return the layers, MTP layers included
   */
  public int layers() {
    return layerIds.length;
  }

  /**
   * The layer numbers of the stored layers, in storage order (MTP layers last, numbered on their own).
   *
   * @return a new array [layers()]
   */
  public int[] layerIds() {
    return layerIds.clone();
  }

  /**
   * The layer number at storage position {@code layer}.
   *
   * @param layer a storage position, in {@code [0, layers())}
   * @return the model's number of that layer, within its kind
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the position is out of range
   */
  public int layerId(int layer) {
    checkLayerRange(layer, layer + 1);
    return layerIds[layer];
  }

  /**
   * Number of multi-token-prediction layers: the last {@code mtpLayers()} storage positions.
   *
   * @return 0 when the trace holds decoder layers only
   */
  public int mtpLayers() {
    return mtpLayers;
  }

  /**
   * The kind of the layer at storage position {@code layer}.
   *
   * @param layer a storage position, in {@code [0, layers())}
   * @return decoder or MTP
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the position is out of range
   */
  public LayerKind layerKind(int layer) {
    checkLayerRange(layer, layer + 1);
    return layer >= layerIds.length - mtpLayers ? LayerKind.MTP : LayerKind.DECODER;
  }

  /**
   * The key (kind and number) of the layer at storage position {@code layer}.
   *
   * @param layer a storage position, in {@code [0, layers())}
   * @return its key
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the position is out of range
   */
  public LayerKey layerKey(int layer) {
    return LayerKey.of(layerKind(layer), layerId(layer));
  }

  /**
   * The keys of every stored layer, in storage order (replay registries take them to match layers by key).
   *
   * @return a new array [layers()]
   */
  public LayerKey[] layerKeys() {
    LayerKey[] out = new LayerKey[layerIds.length];
    for (int i = 0; i < out.length; i++) out[i] = layerKey(i);
    return out;
  }

  /**
   * Position of decoder layer {@code layerId} in this trace.
   *
   * @param layerId a decoder layer number
   * @return its storage position, or -1 when the layer is not stored
   */
  public int layerIndex(int layerId) {
    return layerIndex(LayerKey.decoder(layerId));
  }

  /**
   * Position of the layer {@code key} in this trace.
   *
   * @param key a layer's kind and number
   * @return its storage position, or -1 when the layer is not stored
   */
  public int layerIndex(LayerKey key) {
    for (int i = 0; i < layerIds.length; i++) if (layerIds[i] == key.number() && layerKind(i) == key.kind()) return i;
    return -1;
  }

  /**
   * The router's score function as recorded.
   *
   * @return for example "softmax" or "sigmoid"; free text, not checked against {@code ScoreFunction}
   */
  public String scoreFunction() {
    return scoreFunction;
  }

  /**
   * Storage type of the indices (safetensors dtype names).
   *
   * @return "U8" when E &lt;= 256, else "U16"
   */
  public String indexDtype() {
    return store.elementBytes == 1 ? "U8" : "U16";
  }

  /**
   * Number of samples (sequences).
   *
   * @return the samples, possibly 0
   */
  public int samples() {
    return offsets.length - 1;
  }

  /**
   * Tokens of all samples together.
   *
   * @return the sum of {@link #sampleTokens(int)} over the samples
   */
  public long totalTokens() {
    return offsets[offsets.length - 1];
  }

  /**
   * First global token of sample {@code s}.
   *
   * @param s a sample, in {@code [0, samples()]}; {@code sampleOffset(samples())} is {@link #totalTokens()}
   * @return the global index of the sample's first token
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when s is out of range
   */
  public long sampleOffset(int s) {
    if (s < 0 || s > samples()) throw invalid("sample offset " + s + " outside [0, " + samples() + "]");
    return offsets[s];
  }

  /**
   * The per-sample token offsets.
   *
   * @return a new array [samples + 1], starting at 0 and ending at {@link #totalTokens()}
   */
  public long[] sampleOffsets() {
    return offsets.clone();
  }

  /**
   * Tokens of one sample.
   *
   * @param sample a sample, in {@code [0, samples())}
   * @return its token count
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the sample is out of range
   * @throws ArithmeticException when the sample has more than {@code Integer.MAX_VALUE} tokens
   */
  public int sampleTokens(int sample) {
    checkSample(sample);
    return Math.toIntExact(offsets[sample + 1] - offsets[sample]);
  }

  /**
   * The file this trace was opened from.
   *
   * @return the path, or null for an in-memory trace or a slice
   */
  public Path path() {
    return source == null ? null : source.path;
  }

  /**
   * Whether the indices are memory-mapped from a file.
   *
   * @return true for traces from {@link TraceFiles#open(Path)} and their slices
   */
  public boolean isMapped() {
    return store.mapped;
  }

  // ------------------------------------------------------------------ mask

  /**
   * Whether the trace has a per-token mask.
   *
   * @return true when some rows may be unrecorded; false when every row holds recorded routing
   */
  public boolean hasMask() {
    return mask != null;
  }

  /**
   * Whether one token was recorded.
   *
   * @param sample a sample, in {@code [0, samples())}
   * @param token a token of that sample, in {@code [0, sampleTokens(sample))}
   * @return true when recorded; false when the row is a placeholder (route it live)
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when sample or token is out of range
   */
  public boolean recorded(int sample, int token) {
    checkSample(sample);
    long tokens = offsets[sample + 1] - offsets[sample];
    if (token < 0 || token >= tokens) throw invalid("token " + token + " outside sample " + sample + " ([0, " + tokens + "))");
    return mask == null || mask.get((int) (rowBase + offsets[sample] + token)) != 0;
  }

  /**
   * Copies the mask of global tokens {@code [tokenFrom, tokenTo)} into {@code dst[dstPos ..]} (1 = recorded,
   * 0 = route live; all 1 without a mask).
   *
   * @param tokenFrom first global token, {@code >= 0}
   * @param tokenTo end (exclusive), at most {@link #totalTokens()}
   * @param dst the destination
   * @param dstPos first index written
   * @return the number of bytes written, {@code tokenTo - tokenFrom}
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad range or a destination too short
   */
  public int copyMask(long tokenFrom, long tokenTo, byte[] dst, int dstPos) {
    if (tokenFrom < 0 || tokenTo < tokenFrom || tokenTo > totalTokens())
      throw invalid("token range [" + tokenFrom + ", " + tokenTo + ") outside [0, " + totalTokens() + ")");
    Objects.requireNonNull(dst, "dst");
    int n = Math.toIntExact(tokenTo - tokenFrom);
    if (dstPos < 0 || n > dst.length - (long) dstPos) throw invalid("dst holds " + dst.length + " bytes from " + dstPos + ", needs " + n);
    for (int i = 0; i < n; i++) dst[dstPos + i] = mask == null || mask.get((int) (rowBase + tokenFrom + i)) != 0 ? (byte) 1 : 0;
    return n;
  }

  /**
   * The mask of one sample, what replay takes as its mask.
   *
   * @param sample a sample, in {@code [0, samples())}
   * @return a new array [tokens]: 1 = recorded, 0 = route live (all 1 without a mask)
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the sample is out of range
   */
  public byte[] sampleMask(int sample) {
    checkSample(sample);
    byte[] out = new byte[sampleTokens(sample)];
    copyMask(offsets[sample], offsets[sample + 1], out, 0);
    return out;
  }

  /**
   * Number of unrecorded (mask 0) tokens.
   *
   * @return 0 without a mask
   */
  public long maskedTokens() {
    if (mask == null) return 0;
    long n = 0;
    for (long t = 0; t < totalTokens(); t++) if (mask.get((int) (rowBase + t)) == 0) n++;
    return n;
  }

  // ------------------------------------------------------------------ indices

  /**
   * Expert of one (sample, token, layer, slot).
   *
   * @param sample a sample, in {@code [0, samples())}
   * @param token a token of that sample
   * @param layer a storage position in {@link #layerIds()}, not a layer number
   * @param slot a position within the top-k row, in {@code [0, k)}
   * @return the expert, in {@code [0, E)}
   * @throws TraceFormatException when a file-backed trace holds an index &gt;= E there
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when an argument is out of range
   */
  public int expert(int sample, int token, int layer, int slot) {
    checkSample(sample);
    long tokens = offsets[sample + 1] - offsets[sample];
    if (token < 0 || token >= tokens) throw invalid("token " + token + " outside sample " + sample + " ([0, " + tokens + "))");
    checkLayerRange(layer, layer + 1);
    if (slot < 0 || slot >= topK) throw invalid("slot " + slot + " outside [0, " + topK + ")");
    int v = store.get(rowBase + offsets[sample] + token, layer * topK + slot);
    if (v >= experts) throw outOfRange(offsets[sample] + token, layer, v);
    return v;
  }

  /**
   * All indices of one sample.
   *
   * @param sample a sample, in {@code [0, samples())}
   * @return a new array [tokens, layers, k]
   * @throws TraceFormatException when a file-backed trace holds an index &gt;= E
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when the sample is out of range
   */
  public int[] sample(int sample) {
    int[] out = new int[Math.multiplyExact(sampleTokens(sample), layerIds.length * topK)];
    copySample(sample, 0, layerIds.length, out, 0);
    return out;
  }

  /**
   * Copies sample {@code sample}, layers {@code [layerFrom, layerTo)} (positions), into
   * {@code dst[dstPos ..]} as [tokens, layerTo - layerFrom, k].
   *
   * @param sample a sample, in {@code [0, samples())}
   * @param layerFrom first storage position
   * @param layerTo end position (exclusive), at most {@link #layers()}
   * @param dst the destination
   * @param dstPos first index written
   * @return the number of ints written
   * @throws TraceFormatException when a file-backed trace holds an index &gt;= E
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad range or a destination too short
   */
  public int copySample(int sample, int layerFrom, int layerTo, int[] dst, int dstPos) {
    checkSample(sample);
    return copyTokens(offsets[sample], offsets[sample + 1], layerFrom, layerTo, dst, dstPos);
  }

  /**
   * Copies global tokens {@code [tokenFrom, tokenTo)}, layers {@code [layerFrom, layerTo)}, into
   * {@code dst[dstPos ..]} as [tokens, layerTo - layerFrom, k]. Every copied index is checked against E (a
   * file may hold any byte).
   *
   * @param tokenFrom first global token, {@code >= 0}
   * @param tokenTo end (exclusive), at most {@link #totalTokens()}
   * @param layerFrom first storage position
   * @param layerTo end position (exclusive), at most {@link #layers()}
   * @param dst the destination
   * @param dstPos first index written
   * @return the number of ints written
   * @throws TraceFormatException naming sample, token and layer when a file-backed trace holds an index &gt;= E
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad range or a destination too short
   */
  public int copyTokens(long tokenFrom, long tokenTo, int layerFrom, int layerTo, int[] dst, int dstPos) {
    if (tokenFrom < 0 || tokenTo < tokenFrom || tokenTo > totalTokens())
      throw invalid("token range [" + tokenFrom + ", " + tokenTo + ") outside [0, " + totalTokens() + ")");
    checkLayerRange(layerFrom, layerTo);
    Objects.requireNonNull(dst, "dst");
    long n = (tokenTo - tokenFrom) * (layerTo - layerFrom) * topK;
    if (dstPos < 0 || n > dst.length - (long) dstPos)
      throw invalid("dst holds " + dst.length + " ints from " + dstPos + ", needs " + n);
    store.copy(rowBase + tokenFrom, rowBase + tokenTo, layerFrom * topK, layerTo * topK, dst, dstPos);
    if (store.mayExceed(experts)) {
      int w = (layerTo - layerFrom) * topK;
      for (int i = 0; i < (int) n; i++) {
        int v = dst[dstPos + i];
        if (v >= experts) throw outOfRange(tokenFrom + i / w, layerFrom + (i % w) / topK, v);
      }
    }
    return (int) n;
  }

  /**
   * Checks every index: in {@code [0, E)}, and distinct within each (token, layer) row of a recorded token;
   * for a trace read from a file, also the checksum when it has one. {@link TraceFiles#read(Path)} calls this.
   *
   * @throws TraceFormatException naming the first bad sample, token and layer, or the checksum
   */
  public void verify() {
    if (source != null) source.verifyChecksum();
    if (mask != null)
      for (long t = 0; t < totalTokens(); t++) {
        int m = mask.get((int) (rowBase + t));
        if (m != 0 && m != 1) throw format("mask of global token " + t + " is " + m + ", expected 0 or 1");
      }
    int w = layerIds.length * topK;
    int[] row = new int[w];
    int[] seen = new int[experts];
    int stamp = 0;
    int s = 0;
    for (long t = 0; t < totalTokens(); t++) {
      while (offsets[s + 1] <= t) s++;
      store.copy(rowBase + t, rowBase + t + 1, 0, w, row, 0);
      boolean live = mask != null && mask.get((int) (rowBase + t)) == 0;
      for (int l = 0; l < layerIds.length; l++) {
        if (++stamp == Integer.MAX_VALUE) {
          Arrays.fill(seen, 0);
          stamp = 1;
        }
        for (int j = 0; j < topK; j++) {
          int v = row[l * topK + j];
          if (v >= experts) throw outOfRange(t, l, v);
          if (live) continue; // placeholders of unrecorded rows need not be a top-k set
          if (seen[v] == stamp)
            throw format("sample " + s + " token " + (t - offsets[s]) + " layer " + layerName(l) + ": expert " + v
                + " appears twice in the top-" + topK + " set");
          seen[v] = stamp;
        }
      }
    }
  }

  // ------------------------------------------------------------------ derived traces

  /**
   * Samples {@code [from, to)} as a view sharing the storage (no copy).
   *
   * @param from first sample
   * @param to end sample (exclusive), at most {@link #samples()}
   * @return a trace of {@code to - from} samples; {@link #path()} is null
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad range
   */
  public RoutingTrace slice(int from, int to) {
    if (from < 0 || to < from || to > samples()) throw invalid("sample range [" + from + ", " + to + ") outside [0, " + samples() + "]");
    long[] o = new long[to - from + 1];
    for (int i = 0; i <= to - from; i++) o[i] = offsets[from + i] - offsets[from];
    return new RoutingTrace(model, experts, topK, layerIds, mtpLayers, scoreFunction, o, store, mask, rowBase + offsets[from], null);
  }

  /**
   * The given samples, in the given order, with layers {@code [layerFrom, layerTo)}, as an in-memory copy.
   *
   * @param samples the samples to keep, in the order wanted (repeats allowed)
   * @param layerFrom first storage position
   * @param layerTo end position (exclusive); at least one layer
   * @return a new in-memory trace
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a bad sample or layer range
   */
  public RoutingTrace select(int[] samples, int layerFrom, int layerTo) {
    Objects.requireNonNull(samples, "samples");
    checkLayerRange(layerFrom, layerTo);
    if (layerFrom == layerTo) throw invalid("a trace needs at least one layer");
    int mtp = Math.max(0, layerTo - Math.max(layerFrom, layerIds.length - mtpLayers));
    Builder b = new Builder(model, experts, topK, Arrays.copyOfRange(layerIds, layerFrom, layerTo), mtp, scoreFunction);
    for (int s : samples) {
      int[] idx = new int[Math.multiplyExact(sampleTokens(s), (layerTo - layerFrom) * topK)];
      copySample(s, layerFrom, layerTo, idx, 0);
      b.addSample(idx, 0, sampleTokens(s), mask == null ? null : sampleMask(s), 0);
    }
    return b.build();
  }

  /**
   * Whether both traces hold the same metadata, sample offsets, masks and indices, whatever their storage.
   *
   * @param o another trace, or null
   * @return true when the contents are equal
   */
  public boolean contentEquals(RoutingTrace o) {
    if (o == this) return true;
    if (o == null || experts != o.experts || topK != o.topK || !model.equals(o.model) || !scoreFunction.equals(o.scoreFunction)
        || !Arrays.equals(layerIds, o.layerIds) || mtpLayers != o.mtpLayers || !Arrays.equals(offsets, o.offsets)) return false;
    for (long t = 0; t < totalTokens(); t++) {
      boolean a = mask == null || mask.get((int) (rowBase + t)) != 0, b = o.mask == null || o.mask.get((int) (o.rowBase + t)) != 0;
      if (a != b) return false;
    }
    int w = layerIds.length * topK;
    int chunk = Math.max(1, (1 << 16) / Math.max(1, w));
    int[] a = new int[chunk * w], b = new int[chunk * w];
    for (long t = 0; t < totalTokens(); t += chunk) {
      long end = Math.min(totalTokens(), t + chunk);
      store.copy(rowBase + t, rowBase + end, 0, w, a, 0);
      o.store.copy(o.rowBase + t, o.rowBase + end, 0, w, b, 0);
      if (!Arrays.equals(a, 0, (int) (end - t) * w, b, 0, (int) (end - t) * w)) return false;
    }
    return true;
  }

  @Override
  public String toString() {
    return "RoutingTrace{model=" + model + ", experts=" + experts + ", topK=" + topK + ", layers=" + layerIds.length
        + (mtpLayers > 0 ? " (" + mtpLayers + " MTP)" : "") + ", samples=" + samples() + ", tokens=" + totalTokens() + ", "
        + indexDtype() + (mask != null ? ", masked" : "") + (isMapped() ? ", mapped" : "") + "}";
  }

  long rowBase() {
    return rowBase;
  }

  long[] offsetsUnsafe() {
    return offsets;
  }

  /** "3" for decoder layer 3, "mtp 0" for MTP layer 0 (error messages). */
  String layerName(int layer) {
    return layerKind(layer) == LayerKind.MTP ? "mtp " + layerIds[layer] : Integer.toString(layerIds[layer]);
  }

  // ------------------------------------------------------------------ checks

  private void checkSample(int s) {
    if (s < 0 || s >= samples()) throw invalid("sample " + s + " outside [0, " + samples() + ")");
  }

  private void checkLayerRange(int from, int to) {
    if (from < 0 || to < from || to > layerIds.length)
      throw invalid("layer range [" + from + ", " + to + ") outside [0, " + layerIds.length + ")");
  }

  private TraceFormatException outOfRange(long globalToken, int layer, int v) {
    int s = sampleOf(globalToken);
    return format("sample " + s + " token " + (globalToken - offsets[s]) + " layer " + layerName(layer) + ": expert " + v
        + " out of range [0, " + experts + ")");
  }

  private int sampleOf(long globalToken) {
    int s = Arrays.binarySearch(offsets, globalToken);
    if (s < 0) return -s - 2;
    while (s + 1 < offsets.length - 1 && offsets[s + 1] == globalToken) s++;
    return s;
  }

  private TraceFormatException format(String what) {
    return new TraceFormatException((source != null ? source.path + ": " : "") + what);
  }

  static MoeRouterException invalid(String message) {
    return new MoeRouterException(Status.INVALID_ARGUMENT, message);
  }

  static int elementBytesFor(int experts) {
    return experts <= 256 ? 1 : 2;
  }

  // ------------------------------------------------------------------ builder

  /**
   * Collects samples into an in-memory trace. Each sample is [tokens, layers, k] ints with an optional mask
   * [tokens]; every row of a recorded token must hold k distinct experts in {@code [0, E)} (checked, with an
   * error naming sample, token and layer); rows with mask 0 are stored as {@code 0 .. k-1} whatever they
   * hold (-1 padding included). Not thread-safe.
   */
  public static final class Builder {
    private final String model;
    private final int experts;
    private final int topK;
    private final int[] layerIds;
    private final int mtpLayers;
    private final String scoreFunction;
    private final int eb;
    private byte[] mask; // null until a sample with a mask 0 row arrives
    private final int rowElements;
    private byte[] bytes = new byte[1024];
    private int used;
    private long[] offsets = new long[16];
    private int samples;
    private final int[] seen;
    private int stamp;

    Builder(String model, int experts, int topK, int[] layerIds, int mtpLayers, String scoreFunction) {
      this.model = Objects.requireNonNull(model, "model");
      this.scoreFunction = Objects.requireNonNull(scoreFunction, "scoreFunction");
      Objects.requireNonNull(layerIds, "layerIds");
      if (experts < 1 || experts > MAX_EXPERTS) throw invalid("experts must be in [1, " + MAX_EXPERTS + "], got " + experts);
      if (topK < 1 || topK > experts) throw invalid("topK must be in [1, experts=" + experts + "], got " + topK);
      if (layerIds.length == 0) throw invalid("a trace needs at least one layer");
      if (mtpLayers < 0 || mtpLayers > layerIds.length) throw invalid("mtp layers " + mtpLayers + " outside [0, " + layerIds.length + "]");
      int firstMtp = layerIds.length - mtpLayers;
      for (int i = 0; i < layerIds.length; i++)
        for (int j = 0; j < i; j++)
          if (layerIds[i] == layerIds[j] && (i < firstMtp) == (j < firstMtp))
            throw invalid((i < firstMtp ? "layer id " : "MTP layer id ") + layerIds[i] + " repeated");
      this.mtpLayers = mtpLayers;
      this.experts = experts;
      this.topK = topK;
      this.layerIds = layerIds.clone();
      this.eb = elementBytesFor(experts);
      this.rowElements = Math.multiplyExact(layerIds.length, topK);
      this.seen = new int[experts];
    }

    /**
     * Adds a sample given as [tokens, layers, k] (the whole array).
     *
     * @param indices the sample, a multiple of layers * k ints; copied
     * @return this builder
     * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} naming sample, token and layer of an invalid row
     */
    public Builder addSample(int[] indices) {
      Objects.requireNonNull(indices, "indices");
      if (indices.length % rowElements != 0)
        throw invalid("sample " + samples + ": " + indices.length + " indices is not a multiple of layers*k = " + rowElements);
      return addSample(indices, 0, indices.length / rowElements);
    }

    /**
     * Adds a sample given as [tokens, layers, k] with its mask.
     *
     * @param indices the sample, a multiple of layers * k ints; copied
     * @param mask [tokens], 1 = recorded, 0 = not recorded (the row is stored as placeholders); null: all recorded
     * @return this builder
     * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} naming sample, token and layer of an invalid row
     */
    public Builder addSample(int[] indices, byte[] mask) {
      Objects.requireNonNull(indices, "indices");
      if (indices.length % rowElements != 0)
        throw invalid("sample " + samples + ": " + indices.length + " indices is not a multiple of layers*k = " + rowElements);
      return addSample(indices, 0, indices.length / rowElements, mask, 0);
    }

    /**
     * Adds a sample of {@code tokens} tokens from {@code indices[offset ..]}, [tokens, layers, k].
     *
     * @param indices the array holding the sample; copied
     * @param offset index of the sample's first int
     * @param tokens tokens in the sample, {@code >= 0}
     * @return this builder
     * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a range outside the array or an invalid row
     */
    public Builder addSample(int[] indices, int offset, int tokens) {
      return addSample(indices, offset, tokens, null, 0);
    }

    /**
     * Adds a sample of {@code tokens} tokens from {@code indices[offset ..]}, [tokens, layers, k], with its mask
     * {@code mask[maskOffset ..]} [tokens]. All-or-nothing: a rejected sample adds nothing.
     *
     * @param indices the array holding the sample; copied
     * @param offset index of the sample's first int
     * @param tokens tokens in the sample, {@code >= 0}
     * @param mask 1 = recorded, 0 = not recorded (stored as {@code 0 .. k-1}, -1 padding included); null: all recorded
     * @param maskOffset index of the sample's first mask entry
     * @return this builder
     * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for a range outside an array, a mask value other
     *     than 0 and 1, a row of a recorded token with an expert out of range or repeated (naming sample, token
     *     and layer), or more than 2 GiB of indices
     */
    public Builder addSample(int[] indices, int offset, int tokens, byte[] mask, int maskOffset) {
      Objects.requireNonNull(indices, "indices");
      long n = (long) tokens * rowElements;
      if (tokens < 0 || offset < 0 || n > indices.length - (long) offset)
        throw invalid("sample " + samples + ": " + tokens + " tokens from offset " + offset + " need " + n
            + " indices, the array has " + indices.length);
      if (mask != null && (maskOffset < 0 || tokens > mask.length - (long) maskOffset))
        throw invalid("sample " + samples + ": mask holds " + mask.length + " entries from " + maskOffset + ", needs " + tokens);
      if (mask != null)
        for (int t = 0; t < tokens; t++)
          if (mask[maskOffset + t] != 0 && mask[maskOffset + t] != 1)
            throw invalid("sample " + samples + " token " + t + ": mask " + mask[maskOffset + t] + " is not 0 or 1");
      for (int t = 0; t < tokens; t++) {
        if (mask != null && mask[maskOffset + t] == 0) continue;
        for (int l = 0; l < layerIds.length; l++) {
          if (++stamp == Integer.MAX_VALUE) {
            Arrays.fill(seen, 0);
            stamp = 1;
          }
          int base = offset + t * rowElements + l * topK;
          for (int j = 0; j < topK; j++) {
            int v = indices[base + j];
            if (v < 0 || v >= experts)
              throw invalid("sample " + samples + " token " + t + " layer " + name(l)
                  + ": expert " + v + " out of range [0, " + experts + ")");
            if (seen[v] == stamp)
              throw invalid("sample " + samples + " token " + t + " layer "
                  + name(l) + ": expert " + v + " appears twice in the top-" + topK + " set");
            seen[v] = stamp;
          }
        }
      }
      long newUsed = used + n * eb;
      if (newUsed > Integer.MAX_VALUE - 8)
        throw invalid("an in-memory trace is limited to 2 GiB of indices; write larger traces in parts");
      if (newUsed > bytes.length) bytes = Arrays.copyOf(bytes, (int) Math.min(Integer.MAX_VALUE - 8, Math.max(newUsed, 2L * bytes.length)));
      for (int i = 0; i < n; i++) {
        int v = indices[offset + i];
        if (mask != null && mask[maskOffset + i / rowElements] == 0) v = (i % rowElements) % topK;
        if (eb == 1) {
          bytes[used + i] = (byte) v;
        } else {
          bytes[used + 2 * i] = (byte) v;
          bytes[used + 2 * i + 1] = (byte) (v >>> 8);
        }
      }
      used = (int) newUsed;
      boolean anyMasked = false;
      if (mask != null) for (int t = 0; t < tokens && !anyMasked; t++) anyMasked = mask[maskOffset + t] == 0;
      long rows = offsets[samples] + tokens;
      if (anyMasked && this.mask == null) {
        if (rows > Integer.MAX_VALUE - 8) throw invalid("a trace with a mask is limited to " + (Integer.MAX_VALUE - 8) + " tokens");
        this.mask = new byte[(int) Math.max(rows, 64)];
        Arrays.fill(this.mask, (byte) 1);
      }
      if (this.mask != null) {
        if (rows > this.mask.length) {
          if (rows > Integer.MAX_VALUE - 8) throw invalid("a trace with a mask is limited to " + (Integer.MAX_VALUE - 8) + " tokens");
          int old = this.mask.length;
          this.mask = Arrays.copyOf(this.mask, (int) Math.min(Integer.MAX_VALUE - 8, Math.max(rows, 2L * old)));
          Arrays.fill(this.mask, old, this.mask.length, (byte) 1);
        }
        int base = (int) offsets[samples];
        for (int t = 0; t < tokens; t++) this.mask[base + t] = mask == null ? 1 : mask[maskOffset + t];
      }
      if (samples + 2 > offsets.length) offsets = Arrays.copyOf(offsets, offsets.length * 2);
      offsets[samples + 1] = offsets[samples] + tokens;
      samples++;
      return this;
    }

    /**
     * Adds every sample of another trace with the same E, k and layers.
     *
     * @param other the trace to append
     * @return this builder
     * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} when E, k or the layers differ
     */
    public Builder addSamples(RoutingTrace other) {
      if (other.experts != experts || other.topK != topK || !Arrays.equals(other.layerIds, layerIds) || other.mtpLayers != mtpLayers)
        throw invalid("cannot merge " + other + ": E, k or layers differ");
      for (int s = 0; s < other.samples(); s++) addSample(other.sample(s), other.mask == null ? null : other.sampleMask(s));
      return this;
    }

    private String name(int l) {
      return l >= layerIds.length - mtpLayers ? "mtp " + layerIds[l] : Integer.toString(layerIds[l]);
    }

    /**
     * Samples added so far.
     *
     * @return the number of samples
     */
    public int samples() {
      return samples;
    }

    /**
     * The trace of the samples added so far; the builder can keep adding.
     *
     * @return a new immutable in-memory trace
     */
    public RoutingTrace build() {
      long[] o = Arrays.copyOf(offsets, samples + 1);
      long rows = o[samples];
      IndexStore store = IndexStore.heap(eb, rowElements, rows, Arrays.copyOf(bytes, used));
      ByteBuffer m = mask == null ? null : ByteBuffer.wrap(Arrays.copyOf(mask, (int) rows)).asReadOnlyBuffer();
      return new RoutingTrace(model, experts, topK, layerIds.clone(), mtpLayers, scoreFunction, o, store, m, 0, null);
    }
  }
}
