// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.channels.Channels;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Enumeration;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.stream.Stream;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import java.util.zip.ZipOutputStream;
import org.moerouter.MinusOneRows;
import org.moerouter.MoeRouterException;
import org.moerouter.Status;
import org.moerouter.replay.LayerKey;
import org.moerouter.replay.LayerKind;

/**
 * Routing traces in the layouts of the Python RL stacks, imported into and exported from
 * {@link RoutingTrace} (docs/semantics.md section 7; {@code docs/replay.md} lists each layout's source):
 * <ul>
 *   <li>{@link Layout#SLIME}: one int32 array per sample, {@code [len(tokens) - 1, num_layers, k]}, with a
 *       column for every model layer (dense layers hold zeros); slime pads one row per sample
 *       ({@code prepare_routed_experts_for_routing_replay}) so that row r routes token r of the training
 *       sequence. Import selects the MoE columns (by id, or the columns that are not all zero) and adds that
 *       alignment row with mask 0; export drops it again.</li>
 *   <li>{@link Layout#MILES}: as slime, and rows of -1 mark padding (miles {@code fill_replay_data}); import
 *       keeps them as mask 0 ({@link MinusOneRows#LIVE} by default), export writes masked rows as -1.</li>
 *   <li>{@link Layout#VERL}: padded {@code [batch, max_seq, layers, k]} plus {@code attention_mask
 *       [batch, max_seq]}; verl strips the padding by the mask ({@code set_router_replay_data}). Each batch row
 *       is a sample; rows of zeros inside the mask (positions the rollout did not fill, k &gt; 1) become
 *       mask 0. Layers are all model layers (dense zero) or the MoE layers only.</li>
 *   <li>{@link Layout#MEGATRON}: {@code [tokens, layers, k]} int64 over the MoE layers in router creation
 *       order (decoder layers, then MTP layers): {@code RouterReplay.set_replay_data(list(a.unbind(1)))};
 *       sample boundaries are not part of it.</li>
 * </ul>
 * Files: {@code .npy} (one array; int32, int64, uint8, uint16 or int8), {@code .npz} (several, in archive
 * order, as {@code np.savez(path, *arrays)} writes them), {@code .safetensors} (tensors by name; per-sample
 * lists in natural name order, as written by Python's {@code safetensors} without this library's checksum),
 * or a directory of {@code .npy} files (natural name order). Anything that does not fit is a
 * {@link TraceFormatException} naming the file, sample, row or layer.
 *
 * <pre>{@code
 * TraceInterop.Imported in = TraceInterop.read(Layout.SLIME, Path.of("routed.npz"), null,
 *     new TraceInterop.ImportOptions().experts(64));
 * in.notes().forEach(System.err::println);        // what the import decided on its own
 * TraceFiles.write(Path.of("trace.safetensors"), in.trace());
 * TraceInterop.write(Layout.MEGATRON, in.trace(), Path.of("idx.npy"), new TraceInterop.ExportOptions());
 * }</pre>
 *
 * <p>Traps: without {@link ImportOptions#experts(int)} (or metadata) E is inferred as the largest index + 1,
 * which is too small when the top experts were never chosen: set it for traces that must replay on a router;
 * and a layout without a mask (slime, Megatron) cannot carry unrecorded rows, so exporting them is an error
 * unless {@link ExportOptions#maskedRows(MaskedRows)} says what to write. Every file is written atomically
 * (a temporary file renamed over the target): a failed export leaves the previous file as it was.
 */
public final class TraceInterop {
  private TraceInterop() {}

  /** The layouts of the systems whose traces this class converts. */
  public enum Layout {
    /** slime: per-sample int32 [len(tokens) - 1, num_layers, k], dense layers zero. */
    SLIME,
    /** miles: as slime, rows of -1 are padding. */
    MILES,
    /** verl: padded [batch, max_seq, layers, k] plus attention_mask [batch, max_seq]. */
    VERL,
    /** Megatron-Core: [tokens, layers, k] int64, MoE layers in router creation order. */
    MEGATRON;

    /**
     * The layout's lower-case name, as the CLI takes it.
     *
     * @return "slime", "miles", "verl" or "megatron"
     */
    public String label() {
      return name().toLowerCase(Locale.ROOT);
    }

    /**
     * The layout of a name.
     *
     * @param name "slime", "miles", "verl" or "megatron", in any case
     * @return the layout
     * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} listing the names for anything else
     */
    public static Layout parse(String name) {
      for (Layout l : values()) if (l.label().equals(name.toLowerCase(Locale.ROOT))) return l;
      throw new MoeRouterException(Status.INVALID_ARGUMENT, "unknown layout '" + name + "' (slime, miles, verl, megatron)");
    }

    /**
     * What all-(-1) rows mean on import unless told.
     *
     * @return LIVE for miles (its padding), else REJECT
     */
    public MinusOneRows defaultMinusOneRows() {
      return this == MILES ? MinusOneRows.LIVE : MinusOneRows.REJECT;
    }

    /**
     * How masked rows are written on export unless told.
     *
     * @return MINUS_ONE for miles, ZEROS for verl, ERROR for slime and Megatron (no way to mark them)
     */
    public MaskedRows defaultMaskedRows() {
      return this == MILES ? MaskedRows.MINUS_ONE : this == VERL ? MaskedRows.ZEROS : MaskedRows.ERROR;
    }
  }

  /** How an export writes rows the trace did not record (mask 0). */
  public enum MaskedRows {
    /** Refuse: the layout has no mask, and any value would be replayed (slime and Megatron default). */
    ERROR,
    /** -1 in every column (miles padding rows; the consumer needs minus_one_rows LIVE or ARANGE). */
    MINUS_ONE,
    /** Experts 0 .. k-1 in the MoE columns (a valid set; what slime pads with, modulo E). */
    ARANGE,
    /** Zeros (verl's value for positions the rollout did not fill). */
    ZEROS;

    /**
     * The CLI spelling.
     *
     * @return "error", "minus-one", "arange" or "zeros"
     */
    public String label() {
      return name().toLowerCase(Locale.ROOT).replace('_', '-');
    }

    /**
     * The value of a CLI spelling.
     *
     * @param name "error", "minus-one", "arange" or "zeros", in any case
     * @return the policy
     * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} listing the spellings for anything else
     */
    public static MaskedRows parse(String name) {
      for (MaskedRows m : values()) if (m.label().equals(name.toLowerCase(Locale.ROOT))) return m;
      throw new MoeRouterException(Status.INVALID_ARGUMENT, "unknown masked-rows policy '" + name + "' (error, minus-one, arange, zeros)");
    }
  }

  /**
   * Options of an import; unset ones come from the file's metadata, the layout's default, or inference.
   * Setters return this object; {@link TraceInterop#read} fills unset fields from metadata in place, so use
   * one object per import.
   */
  public static final class ImportOptions {
    String model;
    String scoreFunction;
    int experts;
    int[] layerIds;
    int[] mtpLayerIds;
    long[] sampleOffsets;
    MinusOneRows minusOneRows;
    boolean align = true;

    /** Options with nothing set: everything from metadata, defaults or inference. */
    public ImportOptions() {}

    /**
     * The model name stored in the trace.
     *
     * @param m a free-form name; null for the metadata's or a placeholder
     * @return these options
     */
    public ImportOptions model(String m) {
      this.model = m;
      return this;
    }

    /**
     * The router's score function stored in the trace.
     *
     * @param s "softmax", "sigmoid", ...; null for the metadata's or a placeholder
     * @return these options
     */
    public ImportOptions scoreFunction(String s) {
      this.scoreFunction = s;
      return this;
    }

    /**
     * The number of experts E. Set it whenever it is known: the inferred value is the largest index seen + 1.
     *
     * @param e E, in {@code [1, 65536]} and above every index; 0 (default) infers it and says so in
     *     {@link Imported#notes()}
     * @return these options
     */
    public ImportOptions experts(int e) {
      this.experts = e;
      return this;
    }

    /**
     * slime, miles, verl: the MoE layers to keep, by column (= model layer number); default the columns
     * that are not all zero. Megatron: the decoder layer numbers of the columns (default 0 .. L-1).
     *
     * @param ids layer numbers (copied); null for the default
     * @return these options
     */
    public ImportOptions layerIds(int... ids) {
      this.layerIds = ids == null ? null : ids.clone();
      return this;
    }

    /**
     * Megatron: the last columns are these MTP layers (Megatron creates MTP routers after the decoder's).
     *
     * @param ids MTP layer numbers (copied); null for none
     * @return these options
     */
    public ImportOptions mtpLayerIds(int... ids) {
      this.mtpLayerIds = ids == null ? null : ids.clone();
      return this;
    }

    /**
     * Megatron: sample boundaries over the tokens.
     *
     * @param offsets [samples + 1], from 0 to the token count, non-decreasing (copied); null for one sample
     * @return these options
     */
    public ImportOptions sampleOffsets(long... offsets) {
      this.sampleOffsets = offsets == null ? null : offsets.clone();
      return this;
    }

    /**
     * What all-(-1) rows mean: rejected, or kept as unrecorded (mask 0) under LIVE and ARANGE.
     *
     * @param m the policy; null for {@link Layout#defaultMinusOneRows()}
     * @return these options
     */
    public ImportOptions minusOneRows(MinusOneRows m) {
      this.minusOneRows = m;
      return this;
    }

    /**
     * slime, miles: whether to add the one-row alignment (mask 0) per sample.
     *
     * @param a true (default) so that row r of a sample routes token r of its training sequence
     * @return these options
     */
    public ImportOptions align(boolean a) {
      this.align = a;
      return this;
    }
  }

  /** Options of an export; setters return this object. */
  public static final class ExportOptions {
    int numLayers;
    MaskedRows maskedRows;

    /** Options with nothing set: the layout's defaults. */
    public ExportOptions() {}

    /**
     * slime, miles, verl: the column count (all model layers, dense ones written as zeros).
     *
     * @param n columns, above every stored layer number; 0 (default) for the largest layer number + 1
     * @return these options
     */
    public ExportOptions numLayers(int n) {
      this.numLayers = n;
      return this;
    }

    /**
     * How rows with mask 0 are written.
     *
     * @param m the policy; null for {@link Layout#defaultMaskedRows()}
     * @return these options
     */
    public ExportOptions maskedRows(MaskedRows m) {
      this.maskedRows = m;
      return this;
    }
  }

  /** An imported trace and what the import decided on its own (inferred E, selected layers, masked rows). */
  public static final class Imported {
    private final RoutingTrace trace;
    private final List<String> notes;

    Imported(RoutingTrace trace, List<String> notes) {
      this.trace = trace;
      this.notes = Collections.unmodifiableList(notes);
    }

    /**
     * The imported trace.
     *
     * @return an in-memory trace
     */
    public RoutingTrace trace() {
      return trace;
    }

    /**
     * What the import decided that the caller did not specify (inferred E, selected columns, rows made
     * unrecorded).
     *
     * @return an unmodifiable list, one line per decision
     */
    public List<String> notes() {
      return notes;
    }
  }

  // ------------------------------------------------------------------ import from arrays

  /**
   * slime: one [len(tokens) - 1, num_layers, k] array per sample.
   *
   * @param samples the per-sample integer arrays, same num_layers and k
   * @param o import options
   * @return the trace and the import's notes
   * @throws TraceFormatException naming the sample, row or layer that does not fit
   */
  public static Imported fromSlime(List<Npy.Array> samples, ImportOptions o) {
    return fromPerSample(Layout.SLIME, samples, o, "sample");
  }

  /**
   * miles: one [len(tokens) - 1, num_layers, k] array per sample, rows of -1 are padding.
   *
   * @param samples the per-sample integer arrays, same num_layers and k
   * @param o import options
   * @return the trace and the import's notes
   * @throws TraceFormatException naming the sample, row or layer that does not fit
   */
  public static Imported fromMiles(List<Npy.Array> samples, ImportOptions o) {
    return fromPerSample(Layout.MILES, samples, o, "sample");
  }

  /**
   * verl: routed_experts [batch, max_seq, layers, k] and attention_mask [batch, max_seq].
   *
   * @param routedExperts the padded integer indices
   * @param attentionMask 1 for the positions that hold tokens, 0 for padding
   * @param o import options
   * @return the trace (one sample per batch row) and the import's notes
   * @throws TraceFormatException for mismatched shapes, a mask value other than 0 and 1, or a bad row
   */
  public static Imported fromVerl(Npy.Array routedExperts, Npy.Array attentionMask, ImportOptions o) {
    Objects.requireNonNull(routedExperts, "routedExperts");
    Objects.requireNonNull(attentionMask, "attentionMask");
    long[] s = routedExperts.shape(), m = attentionMask.shape();
    if (s.length != 4)
      throw new TraceFormatException("verl routed_experts must be [batch, max_seq, layers, k], got " + Arrays.toString(s));
    if (m.length != 2 || m[0] != s[0] || m[1] != s[1])
      throw new TraceFormatException("verl attention_mask must be [batch, max_seq] = " + Arrays.toString(new long[] {s[0], s[1]})
          + ", got " + Arrays.toString(m));
    checkIntegers(routedExperts, "verl routed_experts");
    int batch = (int) s[0], seq = (int) s[1], nl = (int) s[2], k = (int) s[3];
    int row = nl * k;
    List<int[]> rows = new ArrayList<>();
    for (int b = 0; b < batch; b++) {
      int valid = 0;
      for (int t = 0; t < seq; t++) if (maskValue(attentionMask, b * seq + t, b, t) != 0) valid++;
      int[] out = new int[valid * row];
      int r = 0;
      for (int t = 0; t < seq; t++) {
        if (maskValue(attentionMask, b * seq + t, b, t) == 0) continue;
        long base = ((long) b * seq + t) * row;
        for (int i = 0; i < row; i++) out[r * row + i] = element(routedExperts, base + i, "verl routed_experts");
        r++;
      }
      rows.add(out);
    }
    return fromRows(Layout.VERL, rows, nl, k, o, "batch row");
  }

  /**
   * Megatron: [tokens, layers, k], any integer dtype (int64 as Megatron's top-k gives).
   *
   * @param indices the indices of every MoE router, decoder layers then MTP layers
   * @param o import options ({@link ImportOptions#sampleOffsets} splits the tokens into samples)
   * @return the trace and the import's notes
   * @throws TraceFormatException for a shape that is not [tokens, layers, k] or a bad row
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for sample offsets that do not cover the tokens
   */
  public static Imported fromMegatron(Npy.Array indices, ImportOptions o) {
    Objects.requireNonNull(indices, "indices");
    long[] s = indices.shape();
    if (s.length != 3) throw new TraceFormatException("Megatron indices must be [tokens, layers, k], got " + Arrays.toString(s));
    checkIntegers(indices, "Megatron indices");
    long[] offsets = o.sampleOffsets != null ? o.sampleOffsets : new long[] {0, s[0]};
    if (offsets.length < 1 || offsets[0] != 0 || offsets[offsets.length - 1] != s[0])
      throw new MoeRouterException(Status.INVALID_ARGUMENT, "sample offsets must run from 0 to " + s[0] + ", got " + Arrays.toString(offsets));
    int row = (int) (s[1] * s[2]);
    List<int[]> rows = new ArrayList<>();
    for (int i = 0; i + 1 < offsets.length; i++) {
      if (offsets[i + 1] < offsets[i]) throw new MoeRouterException(Status.INVALID_ARGUMENT, "sample offsets decrease at " + (i + 1));
      int[] out = new int[Math.toIntExact((offsets[i + 1] - offsets[i]) * row)];
      for (int j = 0; j < out.length; j++) out[j] = element(indices, offsets[i] * row + j, "Megatron indices");
      rows.add(out);
    }
    return fromRows(Layout.MEGATRON, rows, (int) s[1], (int) s[2], o, "sample");
  }

  private static Imported fromPerSample(Layout layout, List<Npy.Array> samples, ImportOptions o, String what) {
    Objects.requireNonNull(samples, "samples");
    if (samples.isEmpty()) throw new TraceFormatException(layout.label() + ": no samples");
    long[] first = samples.get(0).shape();
    List<int[]> rows = new ArrayList<>();
    for (int i = 0; i < samples.size(); i++) {
      Npy.Array a = samples.get(i);
      long[] s = a.shape();
      if (s.length != 3)
        throw new TraceFormatException(layout.label() + " " + what + " " + i + ": expected [len(tokens) - 1, num_layers, k], got "
            + Arrays.toString(s));
      if (s[1] != first[1] || s[2] != first[2])
        throw new TraceFormatException(layout.label() + " " + what + " " + i + " is " + Arrays.toString(s) + ", " + what + " 0 is "
            + Arrays.toString(first) + ": every sample needs the same num_layers and k");
      checkIntegers(a, layout.label() + " " + what + " " + i);
      int[] out = new int[a.size()];
      for (int j = 0; j < out.length; j++) out[j] = element(a, j, layout.label() + " " + what + " " + i);
      rows.add(out);
    }
    return fromRows(layout, rows, (int) first[1], (int) first[2], o, what);
  }

  private static void checkIntegers(Npy.Array a, String what) {
    switch (a.dtype()) {
      case F4:
      case F8:
      case B1:
        throw new TraceFormatException(what + ": routing indices must be integers (int32, int64, uint8, uint16), got "
            + a.dtype().descr());
      default:
    }
  }

  private static int element(Npy.Array a, long i, String what) {
    long v = a.getLong(Math.toIntExact(i));
    if (v < -1 || v > RoutingTrace.MAX_EXPERTS)
      throw new TraceFormatException(what + ": element " + i + " is " + v + ", not an expert index (or -1 padding)");
    return (int) v;
  }

  private static long maskValue(Npy.Array m, long i, int b, int t) {
    double v = m.getDouble(Math.toIntExact(i));
    if (v != 0 && v != 1)
      throw new TraceFormatException("verl attention_mask[" + b + ", " + t + "] is " + v + ", expected 0 or 1");
    return (long) v;
  }

  /** Column selection, row classification, alignment and E: the part every layout shares. */
  private static Imported fromRows(Layout layout, List<int[]> samples, int nl, int k, ImportOptions o, String what) {
    List<String> notes = new ArrayList<>();
    if (k < 1 || nl < 1) throw new TraceFormatException(layout.label() + ": no layers or no experts per token ([.., " + nl + ", " + k + "])");
    MinusOneRows policy = o.minusOneRows != null ? o.minusOneRows : layout.defaultMinusOneRows();
    // Columns to keep and the keys they become.
    int[] cols;
    LayerKey[] keys;
    if (layout == Layout.MEGATRON) {
      int mtp = o.mtpLayerIds == null ? 0 : o.mtpLayerIds.length;
      int dec = nl - mtp;
      if (dec < 0) throw new TraceFormatException("megatron: " + mtp + " MTP layers given for " + nl + " columns");
      int[] decIds = o.layerIds;
      if (decIds == null) {
        decIds = new int[dec];
        for (int i = 0; i < dec; i++) decIds[i] = i;
      }
      if (decIds.length != dec)
        throw new MoeRouterException(Status.INVALID_ARGUMENT, decIds.length + " decoder layer ids given for " + dec
            + " decoder columns of [tokens, " + nl + ", " + k + "]" + (mtp > 0 ? " (" + mtp + " MTP columns last)" : ""));
      cols = new int[nl];
      keys = new LayerKey[nl];
      for (int i = 0; i < nl; i++) {
        cols[i] = i;
        keys[i] = i < dec ? LayerKey.decoder(decIds[i]) : LayerKey.mtp(o.mtpLayerIds[i - dec]);
      }
    } else {
      if (o.mtpLayerIds != null && o.mtpLayerIds.length > 0)
        throw new MoeRouterException(Status.INVALID_ARGUMENT, layout.label() + " has no MTP columns (Megatron layout only)");
      if (o.layerIds != null) {
        cols = o.layerIds.clone();
        for (int c : cols)
          if (c < 0 || c >= nl)
            throw new MoeRouterException(Status.INVALID_ARGUMENT, layout.label() + ": layer id " + c + " is not a column of [.., "
                + nl + ", " + k + "] (ids are 0-based model layer numbers)");
      } else {
        boolean[] used = new boolean[nl];
        for (int[] s : samples)
          for (int i = 0; i < s.length; i++) if (s[i] != 0 && s[i] != -1) used[(i / k) % nl] = true;
        int n = 0;
        for (boolean u : used) if (u) n++;
        cols = new int[n];
        n = 0;
        for (int c = 0; c < nl; c++) if (used[c]) cols[n++] = c;
        if (cols.length == 0)
          throw new TraceFormatException(layout.label() + ": every one of the " + nl + " layer columns is all zero (or -1):"
              + " no MoE routing recorded");
        if (cols.length < nl)
          notes.add(layout.label() + ": " + (nl - cols.length) + " of " + nl + " layer columns are all zero (dense layers), kept MoE"
              + " layers " + Arrays.toString(cols) + " (--layer-ids to choose)");
      }
      keys = LayerKey.decoders(cols);
    }
    int w = cols.length * k;
    int maxExpert = k - 1;
    long padded = 0, unfilled = 0, aligned = 0;
    List<int[]> outIdx = new ArrayList<>();
    List<byte[]> outMask = new ArrayList<>();
    boolean anyMask = false;
    for (int s = 0; s < samples.size(); s++) {
      int[] src = samples.get(s);
      int rowsIn = src.length / (nl * k);
      boolean align = o.align && (layout == Layout.SLIME || layout == Layout.MILES);
      int rowsOut = rowsIn + (align ? 1 : 0);
      int[] idx = new int[rowsOut * w];
      byte[] mask = new byte[rowsOut];
      for (int r = 0; r < rowsIn; r++) {
        int pad = 0, zero = 0;
        int padCol = -1, realCol = -1, zeroCol = -1;
        for (int c = 0; c < cols.length; c++) {
          int base = (r * nl + cols[c]) * k;
          int minus = 0, zeros = 0;
          for (int j = 0; j < k; j++) {
            int v = src[base + j];
            if (v == -1) minus++;
            if (v == 0) zeros++;
            idx[r * w + c * k + j] = v;
          }
          if (minus > 0 && minus < k)
            throw new TraceFormatException(layout.label() + " " + what + " " + s + " row " + r + " layer " + cols[c] + ": "
                + Arrays.toString(Arrays.copyOfRange(src, base, base + k)) + " mixes -1 (padding) with experts");
          if (minus == k) {
            pad++;
            padCol = cols[c];
          } else {
            realCol = cols[c];
          }
          if (zeros == k && k > 1) {
            zero++;
            zeroCol = cols[c];
          }
        }
        mask[r] = 1;
        if (pad == cols.length) {
          if (policy == MinusOneRows.REJECT)
            throw new TraceFormatException(layout.label() + " " + what + " " + s + " row " + r + " is all -1 (padding), rejected"
                + " under minus_one_rows REJECT (LIVE keeps it as mask 0, ARANGE replays experts 0..k-1)");
          if (policy == MinusOneRows.LIVE) {
            mask[r] = 0;
            padded++;
          } else {
            for (int i = 0; i < w; i++) idx[r * w + i] = i % k;
          }
          continue;
        }
        if (pad > 0)
          throw new TraceFormatException(layout.label() + " " + what + " " + s + " row " + r + ": layer " + padCol + " is padding (-1)"
              + " but layer " + realCol + " is not; a trace's mask is per token");
        if (layout == Layout.VERL && zero > 0) {
          if (zero == cols.length) {
            mask[r] = 0; // a position the rollout did not fill (verl zero-initialises routed_experts)
            unfilled++;
            continue;
          }
          throw new TraceFormatException("verl " + what + " " + s + " row " + r + ": layer " + zeroCol + " is all zeros (an"
              + " unfilled row) but another layer is not; select the MoE layers with --layer-ids");
        }
        for (int i = 0; i < w; i++) maxExpert = Math.max(maxExpert, idx[r * w + i]);
      }
      if (align) {
        mask[rowsIn] = 0;
        aligned++;
      }
      for (byte b : mask) anyMask |= b == 0;
      outIdx.add(idx);
      outMask.add(mask);
    }
    int experts = o.experts;
    if (experts <= 0) {
      experts = maxExpert + 1;
      notes.add(layout.label() + ": --experts not given; inferred E = " + experts + " (max index + 1)");
    }
    if (padded + unfilled + aligned > 0) {
      List<String> parts = new ArrayList<>();
      if (aligned > 0) parts.add(aligned + " alignment (one per sample)");
      if (padded > 0) parts.add(padded + " padding (-1)");
      if (unfilled > 0) parts.add(unfilled + " unfilled (all zero)");
      notes.add(layout.label() + ": " + (padded + unfilled + aligned) + " rows kept as mask 0 (route live): " + String.join(", ", parts));
    }
    RoutingTrace.Builder b = RoutingTrace.builder(o.model == null ? "" : o.model, experts, k, keys,
        o.scoreFunction == null ? "" : o.scoreFunction);
    for (int s = 0; s < outIdx.size(); s++) {
      try {
        b.addSample(outIdx.get(s), anyMask ? outMask.get(s) : null);
      } catch (MoeRouterException e) {
        throw new TraceFormatException(layout.label() + " " + what + " " + s + ": " + e.getMessage().replaceFirst("^sample \\d+ ", ""), e);
      }
    }
    return new Imported(b.build(), notes);
  }

  // ------------------------------------------------------------------ export to arrays

  /**
   * slime: one int32 [rows - 1, numLayers, k] array per sample (the alignment row dropped).
   *
   * @param t a trace of decoder layers only
   * @param o export options
   * @return one array per sample
   * @throws TraceFormatException for MTP layers, an empty sample, or unrecorded rows under {@link MaskedRows#ERROR}
   */
  public static List<Npy.Array> toSlime(RoutingTrace t, ExportOptions o) {
    return toPerSample(Layout.SLIME, t, o);
  }

  /**
   * miles: as slime, masked rows as -1.
   *
   * @param t a trace of decoder layers only
   * @param o export options
   * @return one array per sample
   * @throws TraceFormatException for MTP layers or an empty sample
   */
  public static List<Npy.Array> toMiles(RoutingTrace t, ExportOptions o) {
    return toPerSample(Layout.MILES, t, o);
  }

  /**
   * verl: routed_experts and attention_mask, right-padded.
   *
   * @param t a trace of decoder layers only
   * @param o export options
   * @return {routed_experts int32 [samples, max_tokens, numLayers, k], attention_mask int64 [samples, max_tokens]}
   * @throws TraceFormatException for MTP layers
   */
  public static Npy.Array[] toVerl(RoutingTrace t, ExportOptions o) {
    int nl = columns(Layout.VERL, t, o);
    MaskedRows mr = o.maskedRows != null ? o.maskedRows : Layout.VERL.defaultMaskedRows();
    int k = t.topK(), b = t.samples(), seq = 0;
    for (int s = 0; s < b; s++) seq = Math.max(seq, t.sampleTokens(s));
    int[] out = new int[Math.toIntExact((long) b * seq * nl * k)];
    long[] mask = new long[b * seq];
    for (int s = 0; s < b; s++) {
      int n = t.sampleTokens(s);
      fillRows(Layout.VERL, t, s, n, nl, mr, out, (long) s * seq * nl * k);
      Arrays.fill(mask, s * seq, s * seq + n, 1L);
    }
    return new Npy.Array[] {new Npy.Array(Npy.Dtype.I4, new long[] {b, seq, nl, k}, out),
        new Npy.Array(Npy.Dtype.I8, new long[] {b, seq}, mask)};
  }

  /**
   * Megatron: int64 [tokens, layers, k] over every stored layer, in storage order.
   *
   * @param t any trace (MTP layers are the last columns)
   * @param o export options
   * @return one array over the tokens of every sample
   * @throws TraceFormatException for unrecorded rows under {@link MaskedRows#ERROR} (the default)
   */
  public static Npy.Array toMegatron(RoutingTrace t, ExportOptions o) {
    MaskedRows mr = o.maskedRows != null ? o.maskedRows : Layout.MEGATRON.defaultMaskedRows();
    int w = t.layers() * t.topK();
    long[] out = new long[Math.toIntExact(t.totalTokens() * w)];
    int[] row = new int[w];
    byte[] m = new byte[1];
    for (long g = 0; g < t.totalTokens(); g++) {
      t.copyTokens(g, g + 1, 0, t.layers(), row, 0);
      t.copyMask(g, g + 1, m, 0);
      if (m[0] == 0) {
        int sample = sampleOf(t, g);
        if (mr == MaskedRows.ERROR)
          throw maskedError(Layout.MEGATRON, sample, g - t.sampleOffset(sample));
        for (int i = 0; i < w; i++) row[i] = mr == MaskedRows.MINUS_ONE ? -1 : mr == MaskedRows.ZEROS ? 0 : i % t.topK();
      }
      for (int i = 0; i < w; i++) out[(int) (g * w + i)] = row[i];
    }
    return new Npy.Array(Npy.Dtype.I8, new long[] {t.totalTokens(), t.layers(), t.topK()}, out);
  }

  private static List<Npy.Array> toPerSample(Layout layout, RoutingTrace t, ExportOptions o) {
    int nl = columns(layout, t, o);
    MaskedRows mr = o.maskedRows != null ? o.maskedRows : layout.defaultMaskedRows();
    int k = t.topK();
    List<Npy.Array> out = new ArrayList<>();
    for (int s = 0; s < t.samples(); s++) {
      int n = t.sampleTokens(s);
      if (n == 0)
        throw new TraceFormatException(layout.label() + ": sample " + s + " has no tokens, so no row to drop for the alignment"
            + " (" + layout.label() + " stores len(tokens) - 1 rows)");
      int[] a = new int[(n - 1) * nl * k];
      fillRows(layout, t, s, n - 1, nl, mr, a, 0);
      out.add(new Npy.Array(Npy.Dtype.I4, new long[] {n - 1, nl, k}, a));
    }
    return out;
  }

  /** Column count for the layouts with one column per model layer; refuses MTP layers. */
  private static int columns(Layout layout, RoutingTrace t, ExportOptions o) {
    if (t.mtpLayers() > 0)
      throw new TraceFormatException(layout.label() + "'s [tokens, num_layers, k] has no column for MTP layers; the trace has "
          + t.mtpLayers() + " (keep the decoder layers with RoutingTrace.select, or export to megatron)");
    int max = -1;
    for (int l = 0; l < t.layers(); l++) {
      int id = t.layerId(l);
      if (id < 0) throw new TraceFormatException(layout.label() + ": layer id " + id + " cannot be a column (ids are 0-based layer numbers)");
      max = Math.max(max, id);
    }
    int nl = o.numLayers > 0 ? o.numLayers : max + 1;
    if (max >= nl)
      throw new MoeRouterException(Status.INVALID_ARGUMENT, layout.label() + ": layer id " + max + " needs at least " + (max + 1)
          + " columns, --num-layers is " + nl);
    return nl;
  }

  /** Rows [0, rows) of sample s as [rows, nl, k] columns by layer id, dense columns 0, masked rows per policy. */
  private static void fillRows(Layout layout, RoutingTrace t, int s, int rows, int nl, MaskedRows mr, int[] out, long at) {
    int k = t.topK(), L = t.layers();
    int[] src = new int[L * k];
    byte[] m = new byte[1];
    long g0 = t.sampleOffset(s);
    for (int r = 0; r < rows; r++) {
      t.copyTokens(g0 + r, g0 + r + 1, 0, L, src, 0);
      t.copyMask(g0 + r, g0 + r + 1, m, 0);
      int base = (int) (at + (long) r * nl * k);
      if (m[0] == 0) {
        if (mr == MaskedRows.ERROR) throw maskedError(layout, s, r);
        if (mr == MaskedRows.MINUS_ONE) {
          Arrays.fill(out, base, base + nl * k, -1);
          continue;
        }
        if (mr == MaskedRows.ZEROS) continue;
        for (int l = 0; l < L; l++)
          for (int j = 0; j < k; j++) out[base + t.layerId(l) * k + j] = j;
        continue;
      }
      for (int l = 0; l < L; l++) System.arraycopy(src, l * k, out, base + t.layerId(l) * k, k);
    }
  }

  private static TraceFormatException maskedError(Layout layout, int sample, long token) {
    return new TraceFormatException(layout.label() + " has no per-token mask: sample " + sample + " token " + token
        + " was not recorded (mask 0); to write it anyway choose --masked-rows minus-one, arange or zeros (MaskedRows)");
  }

  private static int sampleOf(RoutingTrace t, long g) {
    long[] off = t.sampleOffsets();
    int s = Arrays.binarySearch(off, g);
    if (s < 0) return -s - 2;
    while (s + 1 < off.length - 1 && off[s + 1] == g) s++;
    return s;
  }

  // ------------------------------------------------------------------ files

  /**
   * Imports a file (or directory) in {@code layout}. verl needs its attention mask: a tensor
   * {@code attention_mask} beside {@code routed_experts} in a .safetensors or .npz file, or a separate
   * {@code attentionMask} .npy. Metadata written by {@link #write} (model, experts, score function, layer
   * numbers, sample offsets) fills options the caller left unset.
   *
   * @param layout the system that wrote the file
   * @param in a .npy, .npz or .safetensors file, or a directory of .npy files
   * @param attentionMask verl only: a separate .npy holding the attention mask; null otherwise
   * @param o import options, filled in place from metadata; null for defaults
   * @return the trace and the import's notes
   * @throws IOException when a file cannot be read
   * @throws TraceFormatException naming the file and the sample, row or layer that does not fit
   */
  public static Imported read(Layout layout, Path in, Path attentionMask, ImportOptions o) throws IOException {
    Objects.requireNonNull(layout, "layout");
    Objects.requireNonNull(in, "in");
    ImportOptions opts = o != null ? o : new ImportOptions();
    List<Map.Entry<String, Npy.Array>> arrays = new ArrayList<>();
    Map<String, String> meta = readArrays(in, arrays);
    applyMetadata(meta, opts, layout);
    try {
      switch (layout) {
        case SLIME:
        case MILES: {
          List<Npy.Array> samples = new ArrayList<>();
          for (Map.Entry<String, Npy.Array> e : arrays) samples.add(e.getValue());
          if (samples.isEmpty()) throw new TraceFormatException(in + ": no arrays");
          return layout == Layout.SLIME ? fromSlime(samples, opts) : fromMiles(samples, opts);
        }
        case VERL: {
          Npy.Array experts = named(arrays, "routed_experts", in, attentionMask == null);
          Npy.Array mask;
          if (attentionMask != null) {
            List<Map.Entry<String, Npy.Array>> m = new ArrayList<>();
            readArrays(attentionMask, m);
            if (m.size() != 1) throw new TraceFormatException(attentionMask + ": expected one attention_mask array, found " + m.size());
            mask = m.get(0).getValue();
          } else {
            mask = named(arrays, "attention_mask", in, true);
          }
          return fromVerl(experts, mask, opts);
        }
        default: {
          Npy.Array a = named(arrays, "routed_experts", in, false);
          for (Map.Entry<String, Npy.Array> e : arrays)
            if (e.getKey().equals("sample_offsets") && opts.sampleOffsets == null) {
              Npy.Array off = e.getValue();
              long[] v = new long[off.size()];
              for (int i = 0; i < v.length; i++) v[i] = off.getLong(i);
              opts.sampleOffsets = v;
            }
          return fromMegatron(a, opts);
        }
      }
    } catch (TraceFormatException e) {
      if (e.getMessage().startsWith(in.toString())) throw e;
      throw new TraceFormatException(in + ": " + e.getMessage(), e);
    }
  }

  private static Npy.Array named(List<Map.Entry<String, Npy.Array>> arrays, String name, Path in, boolean required) {
    for (Map.Entry<String, Npy.Array> e : arrays) if (e.getKey().equals(name)) return e.getValue();
    List<Map.Entry<String, Npy.Array>> data = new ArrayList<>();
    for (Map.Entry<String, Npy.Array> e : arrays) if (!e.getKey().equals("sample_offsets")) data.add(e);
    if (!required && data.size() == 1) return data.get(0).getValue();
    List<String> names = new ArrayList<>();
    for (Map.Entry<String, Npy.Array> e : arrays) names.add(e.getKey());
    throw new TraceFormatException(in + ": no array '" + name + "'" + (name.equals("routed_experts") && required
        ? " (verl needs routed_experts and attention_mask in one .safetensors or .npz, or --attention-mask)" : "")
        + " (arrays: " + names + ")");
  }

  private static void applyMetadata(Map<String, String> meta, ImportOptions o, Layout layout) {
    if (meta == null) return;
    if (o.model == null && meta.containsKey("model")) o.model = meta.get("model");
    if (o.scoreFunction == null && meta.containsKey("score_function")) o.scoreFunction = meta.get("score_function");
    if (o.experts <= 0 && meta.containsKey("experts")) o.experts = parseInt(meta.get("experts"), "experts");
    if (layout == Layout.MEGATRON) {
      if (o.layerIds == null && meta.containsKey("layer_ids")) o.layerIds = intList(meta.get("layer_ids"), "layer_ids");
      if (o.mtpLayerIds == null && meta.containsKey("mtp_layer_ids")) o.mtpLayerIds = intList(meta.get("mtp_layer_ids"), "mtp_layer_ids");
    } else if (o.layerIds == null && meta.containsKey("layer_ids")) {
      o.layerIds = intList(meta.get("layer_ids"), "layer_ids");
    }
  }

  private static int parseInt(String v, String key) {
    try {
      return Integer.parseInt(v);
    } catch (NumberFormatException e) {
      throw new TraceFormatException("metadata " + key + " = '" + v + "' is not an integer");
    }
  }

  private static int[] intList(String v, String key) {
    try {
      Object a = Json.parse(v);
      if (a instanceof List) {
        List<?> l = (List<?>) a;
        int[] out = new int[l.size()];
        for (int i = 0; i < out.length; i++) {
          Object x = l.get(i);
          if (!(x instanceof Long) || (Long) x != ((Long) x).intValue()) throw new Json.ParseException("not an int");
          out[i] = ((Long) x).intValue();
        }
        return out;
      }
    } catch (Json.ParseException e) {
      // reported below
    }
    throw new TraceFormatException("metadata " + key + " = '" + v + "' is not a JSON array of integers");
  }

  /** Reads the arrays of a .npy, .npz, .safetensors file or a directory of .npy files; returns the metadata, if any. */
  static Map<String, String> readArrays(Path in, List<Map.Entry<String, Npy.Array>> out) throws IOException {
    String name = in.getFileName().toString().toLowerCase(Locale.ROOT);
    if (Files.isDirectory(in)) {
      List<Path> files = new ArrayList<>();
      try (Stream<Path> s = Files.list(in)) {
        s.filter(p -> p.getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".npy")).forEach(files::add);
      }
      files.sort((a, b) -> naturalCompare(a.getFileName().toString(), b.getFileName().toString()));
      if (files.isEmpty()) throw new TraceFormatException(in + ": directory holds no .npy files");
      for (Path p : files) out.add(Map.entry(stem(p.getFileName().toString()), Npy.read(p)));
      return null;
    }
    if (name.endsWith(".npy")) {
      out.add(Map.entry(stem(in.getFileName().toString()), Npy.read(in)));
      return null;
    }
    if (name.endsWith(".npz")) {
      readNpz(in, out);
      return null;
    }
    if (name.endsWith(".safetensors")) {
      Safetensors.Contents c = Safetensors.read(in);
      List<String> names = new ArrayList<>(c.arrays().keySet());
      names.sort(TraceInterop::naturalCompare);
      for (String n : names) out.add(Map.entry(n, c.arrays().get(n)));
      if (out.isEmpty()) throw new TraceFormatException(in + ": no tensors");
      return c.header().hasMetadata() ? c.metadata() : null;
    }
    throw new MoeRouterException(Status.INVALID_ARGUMENT, in + ": expected a .npy, .npz or .safetensors file or a directory of .npy files");
  }

  /** The .npy entries of an .npz archive (stored or deflated, as np.savez or np.savez_compressed write it), in order. */
  static void readNpz(Path in, List<Map.Entry<String, Npy.Array>> out) throws IOException {
    if (!Files.exists(in)) throw new java.nio.file.NoSuchFileException(in.toString());
    try (ZipFile z = new ZipFile(in.toFile())) {
      for (Enumeration<? extends ZipEntry> en = z.entries(); en.hasMoreElements();) {
        ZipEntry e = en.nextElement();
        if (e.isDirectory()) continue;
        if (!e.getName().endsWith(".npy")) throw new TraceFormatException(in + ": archive entry '" + e.getName() + "' is not a .npy");
        if (e.getSize() > Integer.MAX_VALUE - 8) throw new TraceFormatException(in + "!" + e.getName() + ": too large for one Java array");
        byte[] bytes;
        try (InputStream is = z.getInputStream(e)) {
          bytes = is.readAllBytes();
        }
        out.add(Map.entry(stem(e.getName()), Npy.read(ByteBuffer.wrap(bytes), in + "!" + e.getName())));
      }
    } catch (java.util.zip.ZipException e) {
      throw new TraceFormatException(in + ": not a readable .npz archive (" + e.getMessage() + ")", e);
    }
    if (out.isEmpty()) throw new TraceFormatException(in + ": archive holds no arrays");
  }

  private static String stem(String file) {
    return file.toLowerCase(Locale.ROOT).endsWith(".npy") ? file.substring(0, file.length() - 4) : file;
  }

  /** Names with digit runs compared as numbers: arr_2 before arr_10. */
  static int naturalCompare(String a, String b) {
    int i = 0, j = 0;
    while (i < a.length() && j < b.length()) {
      char x = a.charAt(i), y = b.charAt(j);
      if (Character.isDigit(x) && Character.isDigit(y)) {
        int si = i, sj = j;
        while (i < a.length() && Character.isDigit(a.charAt(i))) i++;
        while (j < b.length() && Character.isDigit(b.charAt(j))) j++;
        String na = a.substring(si, i).replaceFirst("^0+(?=.)", ""), nb = b.substring(sj, j).replaceFirst("^0+(?=.)", "");
        int c = na.length() != nb.length() ? Integer.compare(na.length(), nb.length()) : na.compareTo(nb);
        if (c != 0) return c;
      } else {
        if (x != y) return Character.compare(x, y);
        i++;
        j++;
      }
    }
    return Integer.compare(a.length() - i, b.length() - j);
  }

  /**
   * Exports {@code trace} in {@code layout} to {@code out}: slime and miles as .npz ({@code arr_0 ..}) or
   * .safetensors (same names) or, for one sample, .npy; verl as .safetensors or .npz ({@code routed_experts},
   * {@code attention_mask}); Megatron as .npy, or .safetensors/.npz ({@code routed_experts} plus
   * {@code sample_offsets}). Safetensors files carry the trace's metadata so that {@link #read} restores it.
   * The arrays are built before the file is touched, and the file is replaced atomically.
   *
   * @param layout the system that will read the file
   * @param trace the trace to export
   * @param out the file; its extension (.npy, .npz, .safetensors) chooses the format
   * @param o export options; null for defaults
   * @return what the file holds, in words (for example "int64 [1024, 48, 8]")
   * @throws IOException when the file cannot be written
   * @throws TraceFormatException when the trace does not fit the layout
   * @throws MoeRouterException {@link Status#INVALID_ARGUMENT} for an unknown extension, or several arrays to a .npy
   */
  public static String write(Layout layout, RoutingTrace trace, Path out, ExportOptions o) throws IOException {
    Objects.requireNonNull(layout, "layout");
    Objects.requireNonNull(trace, "trace");
    ExportOptions opts = o != null ? o : new ExportOptions();
    String name = out.getFileName().toString().toLowerCase(Locale.ROOT);
    Map<String, Npy.Array> arrays = new LinkedHashMap<>();
    String what;
    switch (layout) {
      case SLIME:
      case MILES: {
        List<Npy.Array> samples = layout == Layout.SLIME ? toSlime(trace, opts) : toMiles(trace, opts);
        for (int i = 0; i < samples.size(); i++) arrays.put("arr_" + i, samples.get(i));
        long[] s0 = samples.isEmpty() ? new long[] {0, columns(layout, trace, opts), trace.topK()} : samples.get(0).shape();
        what = samples.size() + " int32 arrays [len(tokens) - 1, " + s0[1] + ", " + s0[2] + "]";
        break;
      }
      case VERL: {
        Npy.Array[] v = toVerl(trace, opts);
        arrays.put("routed_experts", v[0]);
        arrays.put("attention_mask", v[1]);
        what = "routed_experts int32 " + Arrays.toString(v[0].shape()) + ", attention_mask int64 " + Arrays.toString(v[1].shape());
        break;
      }
      default: {
        Npy.Array a = toMegatron(trace, opts);
        arrays.put("routed_experts", a);
        if (!name.endsWith(".npy")) arrays.put("sample_offsets", new Npy.Array(Npy.Dtype.I8, new long[] {trace.samples() + 1}, trace.sampleOffsets()));
        what = "int64 " + Arrays.toString(a.shape());
      }
    }
    if (name.endsWith(".npy")) {
      List<String> data = new ArrayList<>(arrays.keySet());
      if (data.size() != 1)
        throw new MoeRouterException(Status.INVALID_ARGUMENT, out + ": " + layout.label() + " with " + trace.samples() + " samples is "
            + data.size() + " arrays; write a .npz or .safetensors file");
      Npy.write(out, arrays.get(data.get(0)));
    } else if (name.endsWith(".npz")) {
      writeNpz(out, arrays);
    } else if (name.endsWith(".safetensors")) {
      Safetensors.write(out, exportMetadata(layout, trace), arrays);
    } else {
      throw new MoeRouterException(Status.INVALID_ARGUMENT, out + ": expected a .npy, .npz or .safetensors output");
    }
    return what;
  }

  private static Map<String, String> exportMetadata(Layout layout, RoutingTrace t) {
    Map<String, String> m = new LinkedHashMap<>();
    m.put("layout", layout.label());
    m.put("written_by", "moe-router");
    m.put("model", t.model());
    m.put("experts", Integer.toString(t.experts()));
    m.put("top_k", Integer.toString(t.topK()));
    m.put("score_function", t.scoreFunction());
    int dec = t.layers() - t.mtpLayers();
    m.put("layer_ids", Json.write(ids(t, 0, dec)));
    if (t.mtpLayers() > 0) m.put("mtp_layer_ids", Json.write(ids(t, dec, t.layers())));
    return m;
  }

  private static List<Long> ids(RoutingTrace t, int from, int to) {
    List<Long> out = new ArrayList<>();
    for (int i = from; i < to; i++) out.add((long) t.layerId(i));
    return out;
  }

  /** An .npz as {@code np.savez} writes it: stored (uncompressed) .npy entries. */
  static void writeNpz(Path out, Map<String, Npy.Array> arrays) throws IOException {
    List<byte[]> files = new ArrayList<>();
    for (Npy.Array a : arrays.values()) {
      ByteBuffer b = Npy.encode(a);
      byte[] bytes = new byte[b.remaining()];
      b.get(bytes);
      files.add(bytes);
    }
    AtomicFiles.write(out, ch -> {
      OutputStream os = Channels.newOutputStream(ch);
      ZipOutputStream z = new ZipOutputStream(os);
      int i = 0;
      for (String n : arrays.keySet()) {
        byte[] bytes = files.get(i++);
        ZipEntry e = new ZipEntry(n + ".npy");
        e.setMethod(ZipEntry.STORED);
        e.setSize(bytes.length);
        e.setCompressedSize(bytes.length);
        CRC32 crc = new CRC32();
        crc.update(bytes);
        e.setCrc(crc.getValue());
        e.setTime(0); // reproducible archives
        z.putNextEntry(e);
        z.write(bytes);
        z.closeEntry();
      }
      z.finish(); // not close(): the channel belongs to AtomicFiles, which forces and renames it
      os.flush();
    });
  }
}
