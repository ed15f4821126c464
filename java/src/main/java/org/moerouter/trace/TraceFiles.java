// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.channels.WritableByteChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.function.UnaryOperator;
import java.util.regex.Pattern;
import java.util.zip.CRC32;

/**
 * Reading and writing routing traces as safetensors files, and .npy import/export.
 *
 * <h2>File format (versions 1 and 2)</h2>
 * A <a href="https://github.com/huggingface/safetensors">safetensors</a> file:
 * <ol>
 *   <li>8 bytes: little-endian unsigned header length {@code N} (a multiple of 8 when written here);</li>
 *   <li>{@code N} bytes: UTF-8 JSON object, padded with trailing spaces;</li>
 *   <li>the data buffer: raw little-endian tensors, back to back, no gaps, exactly filling the rest of the
 *       file; {@code data_offsets} are relative to the start of this buffer.</li>
 * </ol>
 * The header holds two or three tensors and the metadata:
 * <pre>
 * {"__metadata__": {"format": "moe-router-trace", "format_version": "1", "model": "...",
 *                   "experts": "64", "top_k": "8", "layer_ids": "[1,3,5]", "score_function": "softmax",
 *                   "checksum": "crc32:1a2b3c4d"},
 *  "sample_offsets": {"dtype": "I64", "shape": [S + 1], "data_offsets": [0, 8 (S + 1)]},
 *  "indices": {"dtype": "U8" | "U16", "shape": [T, L, k], "data_offsets": [8 (S + 1), ...]}}
 * </pre>
 * {@code indices} is uint8 when E &lt;= 256, else uint16 (up to 65536 experts); T is the total number
 * of tokens, L = number of layers; sample s holds rows
 * {@code sample_offsets[s] .. sample_offsets[s + 1]} (non-decreasing, from 0 to T). Version 2 (written
 * only when needed, so that traces without these stay readable by version-1 readers) adds an optional
 * tensor {@code "mask": {"dtype": "U8" (or "BOOL"), "shape": [T]}} (1 = recorded, 0 = not recorded: route
 * live) and an optional metadata key {@code mtp_layer_ids} (a JSON array): the stored layers are then
 * {@code layer_ids} (decoder) followed by {@code mtp_layer_ids} (multi-token prediction), so
 * L = len(layer_ids) + len(mtp_layer_ids). Unknown metadata keys are kept and covered by the checksum.
 * {@code checksum} is CRC-32 (zlib) of the data buffer followed by the canonical metadata: for every
 * metadata key except {@code checksum}, in sorted order, the UTF-8 bytes of {@code key + "=" + value + "\n"}.
 * It may be absent (a file written by another tool, for example Python {@code safetensors}); when present it
 * must match. From Python:
 * <pre>
 * from safetensors.numpy import load_file, save_file
 * t = load_file("trace.safetensors"); idx, off = t["indices"], t["sample_offsets"]
 * save_file({"indices": idx, "sample_offsets": off}, "mine.safetensors", metadata={"format": "moe-router-trace",
 *     "format_version": "1", "model": "m", "experts": "64", "top_k": "8", "layer_ids": "[1,3,5]",
 *     "score_function": "softmax"})                    # no checksum: accepted, 'trace inspect' says so
 * # checksum: zlib.crc32(data_bytes + "".join(f"{k}={v}\n" for k, v in sorted(meta.items()) if k != "checksum").encode())
 * </pre>
 *
 * <h2>Guarantees</h2>
 * {@link #write} is atomic: a temporary file in the same directory, forced to disk, renamed over the
 * target; a failure or a crash leaves any previous file byte-identical. {@link #open} maps the file and
 * checks the header and layout (not the data); {@link #read} additionally verifies the checksum (when present) and every
 * index. Malformed files raise {@link TraceFormatException} with the path and the precise problem;
 * file-system failures raise {@link IOException}.
 *
 * <pre>{@code
 * TraceFiles.write(trace, Path.of("trace.safetensors"));
 * RoutingTrace mapped = TraceFiles.open(Path.of("trace.safetensors"));   // cheap: header only
 * RoutingTrace checked = TraceFiles.read(Path.of("trace.safetensors"));  // checksum and every index
 * }</pre>
 *
 * <p>Trap: {@link #open} does not read the data, so a corrupt index surfaces only when it is accessed (as a
 * {@link TraceFormatException} from the accessor); use {@link #read} for files from elsewhere.
 */
public final class TraceFiles {
  private TraceFiles() {}

  /** The {@code format} metadata value that marks a safetensors file as a routing trace. */
  public static final String FORMAT = "moe-router-trace";
  /** The version written for traces without a mask or MTP layers (readable by every version of this library). */
  public static final String FORMAT_VERSION = "1";
  /** The version written for traces with a mask or MTP layers (version 1 readers reject them by version). */
  public static final String FORMAT_VERSION_MASKED = "2";
  /** Largest accepted JSON header (the safetensors limit). */
  static final long MAX_HEADER = 100_000_000L;
  private static final long MAP_CHUNK = 1L << 30;

  private static final Pattern UINT = Pattern.compile("0|[1-9][0-9]{0,9}");
  private static final Pattern CHECKSUM = Pattern.compile("crc32:[0-9a-f]{8}");

  // ------------------------------------------------------------------ writing

  /**
   * Writes {@code trace} to {@code path} atomically (see the class comment), with a checksum; format version 2
   * only when the trace has a mask or MTP layers.
   *
   * @param trace the trace (in memory, mapped or a slice)
   * @param path the file, replaced in one step
   * @throws IOException when the file cannot be written (the previous one stays)
   */
  public static void write(RoutingTrace trace, Path path) throws IOException {
    write(trace, path, UnaryOperator.identity());
  }

  /** Test hook: {@code wrap} interposes on the channel the file content goes through. */
  static void write(RoutingTrace trace, Path path, UnaryOperator<WritableByteChannel> wrap) throws IOException {
    Objects.requireNonNull(trace, "trace");
    Objects.requireNonNull(path, "path");
    long[] offsets = trace.offsetsUnsafe();
    ByteBuffer offsetBytes = ByteBuffer.allocate(offsets.length * 8).order(ByteOrder.LITTLE_ENDIAN);
    for (long o : offsets) offsetBytes.putLong(o);
    offsetBytes.flip();
    long rowFrom = trace.rowBase(), rowTo = rowFrom + trace.totalTokens();

    ByteBuffer maskBytes = null;
    if (trace.mask != null) {
      maskBytes = trace.mask.duplicate();
      maskBytes.limit((int) rowTo).position((int) rowFrom);
      maskBytes = maskBytes.slice();
    }

    Map<String, String> meta = metadata(trace);
    CRC32 crc = new CRC32();
    crc.update(offsetBytes.duplicate());
    trace.store.update(crc, rowFrom, rowTo);
    if (maskBytes != null) crc.update(maskBytes.duplicate());
    crc.update(canonical(meta));
    meta.put("checksum", String.format("crc32:%08x", crc.getValue()));

    long indexBytes = trace.totalTokens() * trace.layers() * trace.topK() * trace.store.elementBytes;
    Map<String, Object> root = new LinkedHashMap<>();
    root.put("__metadata__", meta);
    tensor(root, "sample_offsets", "I64", new long[] {offsets.length}, 0, offsetBytes.remaining());
    long idxEnd = offsetBytes.remaining() + indexBytes;
    tensor(root, "indices", trace.indexDtype(), new long[] {trace.totalTokens(), trace.layers(), trace.topK()},
        offsetBytes.remaining(), idxEnd);
    if (maskBytes != null) tensor(root, "mask", "U8", new long[] {trace.totalTokens()}, idxEnd, idxEnd + maskBytes.remaining());
    ByteBuffer maskOut = maskBytes;
    ByteBuffer head = Safetensors.encodeHeader(root);

    AtomicFiles.write(path, ch -> {
      AtomicFiles.writeFully(ch, head);
      AtomicFiles.writeFully(ch, offsetBytes);
      IOException[] failure = new IOException[1];
      trace.store.forEachSlice(rowFrom, rowTo, slice -> {
        if (failure[0] != null) return;
        try {
          AtomicFiles.writeFully(ch, slice);
        } catch (IOException e) {
          failure[0] = e;
        }
      });
      if (failure[0] != null) throw failure[0];
      if (maskOut != null) AtomicFiles.writeFully(ch, maskOut);
    }, wrap);
  }

  private static void tensor(Map<String, Object> root, String name, String dtype, long[] shape, long begin, long end) {
    Map<String, Object> t = new LinkedHashMap<>();
    t.put("dtype", dtype);
    t.put("shape", shape);
    t.put("data_offsets", new long[] {begin, end});
    root.put(name, t);
  }

  /** The metadata written for a trace, checksum excluded. */
  static Map<String, String> metadata(RoutingTrace t) {
    Map<String, String> m = new LinkedHashMap<>();
    m.put("format", FORMAT);
    m.put("format_version", t.hasMask() || t.mtpLayers() > 0 ? FORMAT_VERSION_MASKED : FORMAT_VERSION);
    m.put("model", t.model());
    m.put("experts", Integer.toString(t.experts()));
    m.put("top_k", Integer.toString(t.topK()));
    int decoders = t.layers() - t.mtpLayers();
    StringBuilder ids = new StringBuilder("[");
    for (int i = 0; i < decoders; i++) ids.append(i == 0 ? "" : ",").append(t.layerId(i));
    m.put("layer_ids", ids.append(']').toString());
    if (t.mtpLayers() > 0) {
      StringBuilder mtp = new StringBuilder("[");
      for (int i = decoders; i < t.layers(); i++) mtp.append(i == decoders ? "" : ",").append(t.layerId(i));
      m.put("mtp_layer_ids", mtp.append(']').toString());
    }
    m.put("score_function", t.scoreFunction());
    if (t.source != null) t.source.extra.forEach(m::putIfAbsent);
    return m;
  }

  static byte[] canonical(Map<String, String> meta) {
    StringBuilder s = new StringBuilder();
    for (Map.Entry<String, String> e : new TreeMap<>(meta).entrySet())
      if (!e.getKey().equals("checksum")) s.append(e.getKey()).append('=').append(e.getValue()).append('\n');
    return s.toString().getBytes(StandardCharsets.UTF_8);
  }

  // ------------------------------------------------------------------ reading

  /**
   * Maps a trace file and checks its header and layout; indices are read (and range-checked) on access.
   *
   * @param path a trace file
   * @return a memory-mapped trace
   * @throws IOException when the file cannot be read
   * @throws TraceFormatException naming the file and the problem for a malformed header or layout
   */
  public static RoutingTrace open(Path path) throws IOException {
    Objects.requireNonNull(path, "path");
    try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
      try {
        return parse(ch, path);
      } catch (TraceFormatException e) {
        throw e;
      } catch (RuntimeException e) {
        // Defensive: whatever the bytes, nothing but a library exception escapes.
        throw new TraceFormatException(path + ": unreadable trace (" + e + ")", e);
      }
    }
  }

  /**
   * {@link #open} followed by {@link RoutingTrace#verify()}: checksum, index ranges, distinct rows.
   *
   * @param path a trace file
   * @return a memory-mapped trace whose every index was checked
   * @throws IOException when the file cannot be read
   * @throws TraceFormatException naming the file and the first problem (checksum, sample, token, layer)
   */
  public static RoutingTrace read(Path path) throws IOException {
    RoutingTrace t = open(path);
    t.verify();
    return t;
  }

  /**
   * The metadata of a trace file (header only, checksum not verified).
   *
   * @param path a trace file
   * @return the {@code __metadata__} strings, unknown keys included
   * @throws IOException when the file cannot be read
   * @throws TraceFormatException for a malformed header
   */
  public static Map<String, String> metadata(Path path) throws IOException {
    return new LinkedHashMap<>(open(path).source.all);
  }

  private static RoutingTrace parse(FileChannel ch, Path path) throws IOException {
    long size = ch.size();
    long[] hl = new long[1];
    Map<String, Object> root = Safetensors.headerJson(ch, path, hl);
    long n = hl[0];

    // metadata
    Object metaNode = root.get("__metadata__");
    if (metaNode == null) throw fail(path, "no __metadata__ in the header: not a routing trace");
    if (!(metaNode instanceof Map)) throw fail(path, "__metadata__ is not a JSON object");
    Map<String, String> meta = new LinkedHashMap<>();
    for (Map.Entry<?, ?> e : ((Map<?, ?>) metaNode).entrySet()) {
      if (!(e.getValue() instanceof String)) throw fail(path, "metadata '" + e.getKey() + "' is not a string");
      meta.put((String) e.getKey(), (String) e.getValue());
    }
    String format = required(meta, "format", path);
    if (!format.equals(FORMAT)) throw fail(path, "metadata format is '" + format + "', expected '" + FORMAT + "'");
    String version = required(meta, "format_version", path);
    if (!version.equals(FORMAT_VERSION) && !version.equals(FORMAT_VERSION_MASKED))
      throw fail(path, "unsupported trace format version '" + version + "' (this library reads " + FORMAT_VERSION + " and "
          + FORMAT_VERSION_MASKED + ")");
    String model = required(meta, "model", path);
    int experts = uint(meta, "experts", path);
    if (experts < 1 || experts > RoutingTrace.MAX_EXPERTS)
      throw fail(path, "experts = " + experts + " outside [1, " + RoutingTrace.MAX_EXPERTS + "]");
    int topK = uint(meta, "top_k", path);
    if (topK < 1 || topK > experts) throw fail(path, "top_k = " + topK + " outside [1, experts=" + experts + "]");
    int[] decoderIds = layerIds(required(meta, "layer_ids", path), "layer_ids", false, path);
    int[] mtpIds = meta.containsKey("mtp_layer_ids") ? layerIds(meta.get("mtp_layer_ids"), "mtp_layer_ids", true, path) : new int[0];
    int[] layerIds = Arrays.copyOf(decoderIds, decoderIds.length + mtpIds.length);
    System.arraycopy(mtpIds, 0, layerIds, decoderIds.length, mtpIds.length);
    String score = required(meta, "score_function", path);
    // A file written by another tool (Python safetensors) may have no checksum: allowed; one that has a
    // checksum must match it.
    String checksum = meta.get("checksum");
    if (checksum != null && !CHECKSUM.matcher(checksum).matches())
      throw fail(path, "checksum '" + checksum + "' is not of the form crc32:xxxxxxxx");

    // tensors
    for (String name : root.keySet())
      if (!name.equals("__metadata__") && !name.equals("sample_offsets") && !name.equals("indices") && !name.equals("mask"))
        throw fail(path, "unexpected tensor '" + name + "' (a trace holds 'indices', 'sample_offsets' and optionally 'mask')");
    String wantDtype = experts <= 256 ? "U8" : "U16";
    int eb = RoutingTrace.elementBytesFor(experts);
    long[] offShape = new long[1];
    long[] offRange = tensorInfo(root, "sample_offsets", "I64", "I64", offShape, path);
    long[] idxShape = new long[3];
    long[] idxRange = tensorInfo(root, "indices", wantDtype, "U8 or U16", idxShape, path);
    if (offShape[0] < 1) throw fail(path, "sample_offsets has shape [" + offShape[0] + "], needs at least 1 entry");
    if (offShape[0] - 1 > Integer.MAX_VALUE - 8) throw fail(path, "too many samples: " + (offShape[0] - 1));
    if (idxShape[1] != layerIds.length)
      throw fail(path, "indices shape " + Arrays.toString(idxShape) + " has " + idxShape[1] + " layers, layer_ids lists "
          + layerIds.length);
    if (idxShape[2] != topK)
      throw fail(path, "indices shape " + Arrays.toString(idxShape) + " has k = " + idxShape[2] + ", top_k is " + topK);
    long dataLen = size - 8 - n;
    checkRange(path, "sample_offsets", offRange, offShape[0], 8);
    checkRange(path, "indices", idxRange, idxShape[0] * idxShape[1] * idxShape[2], eb);
    long[] maskRange = null;
    if (root.containsKey("mask")) {
      Object m = root.get("mask");
      String maskDtype = m instanceof Map && "BOOL".equals(((Map<?, ?>) m).get("dtype")) ? "BOOL" : "U8";
      long[] maskShape = new long[1];
      maskRange = tensorInfo(root, "mask", maskDtype, "U8 or BOOL", maskShape, path);
      if (maskShape[0] != idxShape[0])
        throw fail(path, "mask shape [" + maskShape[0] + "] does not match the " + idxShape[0] + " tokens of indices");
      if (idxShape[0] > Integer.MAX_VALUE - 8) throw fail(path, "a trace with a mask is limited to " + (Integer.MAX_VALUE - 8) + " tokens");
      checkRange(path, "mask", maskRange, maskShape[0], 1);
    }
    long[][] ranges = maskRange == null ? new long[][] {offRange, idxRange} : new long[][] {offRange, idxRange, maskRange};
    Arrays.sort(ranges, (a, b) -> Long.compare(a[0], b[0]));
    for (int i = 0; i < ranges.length; i++)
      if ((i == 0 && ranges[0][0] != 0) || (i > 0 && ranges[i - 1][1] != ranges[i][0]))
        throw fail(path, "tensor data_offsets leave a gap or overlap: " + Arrays.toString(ranges[Math.max(0, i - 1)]) + " and "
            + Arrays.toString(ranges[Math.max(1, i)]));
    long dataEnd = ranges[ranges.length - 1][1];
    if (dataEnd > dataLen)
      throw fail(path, "truncated: the tensors need " + dataEnd + " data bytes, the file has " + dataLen);
    if (dataEnd < dataLen)
      throw fail(path, (dataLen - dataEnd) + " unexpected bytes after the tensor data");

    long dataStart = 8 + n;
    int samples = (int) (offShape[0] - 1);
    long totalTokens = idxShape[0];
    ByteBuffer ob = ByteBuffer.allocate((int) (offShape[0] * 8)).order(ByteOrder.LITTLE_ENDIAN);
    Safetensors.readFully(ch, ob, dataStart + offRange[0]);
    long[] offsets = new long[samples + 1];
    for (int i = 0; i <= samples; i++) offsets[i] = ob.getLong(i * 8);
    if (offsets[0] != 0) throw fail(path, "sample_offsets[0] is " + offsets[0] + ", must be 0");
    for (int i = 0; i < samples; i++)
      if (offsets[i + 1] < offsets[i] || offsets[i + 1] > totalTokens)
        throw fail(path, "sample_offsets[" + (i + 1) + "] = " + offsets[i + 1] + " is not in [" + offsets[i] + ", " + totalTokens + "]");
    if (offsets[samples] != totalTokens)
      throw fail(path, "sample_offsets end at " + offsets[samples] + ", indices hold " + totalTokens + " tokens");
    for (int i = 0; i < samples; i++)
      if (offsets[i + 1] - offsets[i] > Integer.MAX_VALUE - 8)
        throw fail(path, "sample " + i + " has " + (offsets[i + 1] - offsets[i]) + " tokens (limit " + (Integer.MAX_VALUE - 8) + ")");

    int rowElements = layerIds.length * topK;
    long rowBytes = (long) rowElements * eb;
    long chunkRows = Math.max(1, MAP_CHUNK / rowBytes);
    int nChunks = (int) Math.max(1, (totalTokens + chunkRows - 1) / chunkRows);
    ByteBuffer[] chunks = new ByteBuffer[nChunks];
    for (int c = 0; c < nChunks; c++) {
      long r0 = c * chunkRows, r1 = Math.min(totalTokens, r0 + chunkRows);
      chunks[c] = totalTokens == 0 ? ByteBuffer.allocate(0)
          : ch.map(FileChannel.MapMode.READ_ONLY, dataStart + idxRange[0] + r0 * rowBytes, (r1 - r0) * rowBytes);
    }
    IndexStore store = new IndexStore(eb, rowElements, totalTokens, chunks, chunkRows, true);
    ByteBuffer mask = maskRange == null ? null
        : totalTokens == 0 ? ByteBuffer.allocate(0) : ch.map(FileChannel.MapMode.READ_ONLY, dataStart + maskRange[0], totalTokens);
    List<ByteBuffer> data = new ArrayList<>();
    for (long p = 0; p < dataLen; p += MAP_CHUNK)
      data.add(ch.map(FileChannel.MapMode.READ_ONLY, dataStart + p, Math.min(MAP_CHUNK, dataLen - p)));
    Map<String, String> extra = new LinkedHashMap<>(meta);
    for (String k : new String[] {"format", "format_version", "model", "experts", "top_k", "layer_ids", "mtp_layer_ids",
        "score_function", "checksum"})
      extra.remove(k);
    Source src = new Source(path, data.toArray(new ByteBuffer[0]), checksum, canonical(meta), meta, extra);
    return new RoutingTrace(model, experts, topK, layerIds, mtpIds.length, score, offsets, store, mask, 0, src);
  }

  private static long[] tensorInfo(Map<String, Object> root, String name, String wantDtype, String allowed, long[] shapeOut, Path path) {
    Object node = root.get(name);
    if (node == null) throw fail(path, "no '" + name + "' tensor in the header");
    if (!(node instanceof Map)) throw fail(path, "tensor '" + name + "' is not a JSON object");
    Map<?, ?> t = (Map<?, ?>) node;
    Object dtype = t.get("dtype"), shapeNode = t.get("shape"), offsNode = t.get("data_offsets");
    if (!(dtype instanceof String)) throw fail(path, "tensor '" + name + "' lacks a string dtype");
    if (!(shapeNode instanceof List)) throw fail(path, "tensor '" + name + "' lacks a shape array");
    if (!(offsNode instanceof List) || ((List<?>) offsNode).size() != 2)
      throw fail(path, "tensor '" + name + "' lacks data_offsets [begin, end]");
    if (t.size() != 3) throw fail(path, "tensor '" + name + "' has fields other than dtype, shape and data_offsets");
    List<?> shape = (List<?>) shapeNode, offs = (List<?>) offsNode;
    if (!dtype.equals(wantDtype)) {
      String why = name.equals("indices") && (dtype.equals("U8") || dtype.equals("U16"))
          ? " (experts metadata implies " + wantDtype + ")" : " (expected " + allowed + ")";
      throw fail(path, "tensor '" + name + "' has dtype " + dtype + why);
    }
    if (shape.size() != shapeOut.length)
      throw fail(path, "tensor '" + name + "' has shape " + Json.write(shape) + ", expected " + shapeOut.length + " dimensions");
    for (int i = 0; i < shapeOut.length; i++) shapeOut[i] = nonNegativeLong(shape.get(i), "tensor '" + name + "' shape", path);
    return new long[] {nonNegativeLong(offs.get(0), "tensor '" + name + "' data_offsets", path),
        nonNegativeLong(offs.get(1), "tensor '" + name + "' data_offsets", path)};
  }

  private static void checkRange(Path path, String name, long[] range, long elements, int itemSize) {
    long bytes;
    try {
      bytes = Math.multiplyExact(elements, itemSize);
    } catch (ArithmeticException e) {
      throw fail(path, "tensor '" + name + "' is too large");
    }
    if (range[1] < range[0] || range[1] - range[0] != bytes)
      throw fail(path, "tensor '" + name + "' data_offsets " + Arrays.toString(range) + " span " + (range[1] - range[0])
          + " bytes, its dtype and shape need " + bytes);
  }

  private static long nonNegativeLong(Object v, String what, Path path) {
    if (!(v instanceof Long) || (Long) v < 0 || (Long) v > (1L << 50))
      throw fail(path, what + " holds " + Json.write(v) + ", expected a non-negative integer");
    return (Long) v;
  }

  private static String required(Map<String, String> meta, String key, Path path) {
    String v = meta.get(key);
    if (v == null) throw fail(path, "metadata lacks '" + key + "'");
    return v;
  }

  private static int uint(Map<String, String> meta, String key, Path path) {
    String v = required(meta, key, path);
    if (!UINT.matcher(v).matches() || Long.parseLong(v) > Integer.MAX_VALUE)
      throw fail(path, "metadata " + key + " = '" + v + "' is not a non-negative integer");
    return Integer.parseInt(v);
  }

  private static int[] layerIds(String v, String key, boolean mayBeEmpty, Path path) {
    Object a;
    try {
      a = Json.parse(v);
    } catch (Json.ParseException e) {
      throw fail(path, "metadata " + key + " = '" + v + "' is not a JSON array of integers");
    }
    if (!(a instanceof List) || (!mayBeEmpty && ((List<?>) a).isEmpty()))
      throw fail(path, "metadata " + key + " = '" + v + "' is not a " + (mayBeEmpty ? "" : "non-empty ") + "JSON array of integers");
    List<?> list = (List<?>) a;
    int[] ids = new int[list.size()];
    for (int i = 0; i < ids.length; i++) {
      Object e = list.get(i);
      if (!(e instanceof Long) || (Long) e != ((Long) e).intValue())
        throw fail(path, "metadata " + key + "[" + i + "] = " + Json.write(e) + " is not an int");
      ids[i] = ((Long) e).intValue();
      for (int j = 0; j < i; j++) if (ids[j] == ids[i]) throw fail(path, "metadata " + key + " repeats layer " + ids[i]);
    }
    return ids;
  }

  static TraceFormatException fail(Path path, String what) {
    return new TraceFormatException(path + ": " + what);
  }

  /** Where a file-backed trace came from, and how to verify its checksum. */
  static final class Source {
    final Path path;
    private final ByteBuffer[] data;
    private final String checksum; // null: written by another tool without one
    private final byte[] canonical;
    final Map<String, String> all;
    final Map<String, String> extra;

    Source(Path path, ByteBuffer[] data, String checksum, byte[] canonical, Map<String, String> all, Map<String, String> extra) {
      this.path = path;
      this.data = data;
      this.checksum = checksum;
      this.canonical = canonical;
      this.all = all;
      this.extra = extra;
    }

    /** Whether the file carries a checksum (files written by Python tools may not). */
    boolean hasChecksum() {
      return checksum != null;
    }

    void verifyChecksum() {
      if (checksum == null) return;
      CRC32 crc = new CRC32();
      for (ByteBuffer b : data) crc.update(b.duplicate());
      crc.update(canonical);
      String actual = String.format("crc32:%08x", crc.getValue());
      if (!actual.equals(checksum))
        throw fail(path, "checksum mismatch: the header records " + checksum + ", the content hashes to " + actual
            + " (the file is corrupt)");
    }
  }

  // ------------------------------------------------------------------ .npy

  /**
   * Writes the indices of all samples, concatenated, as an int32 .npy of shape [tokens, layers, k]
   * (the layout SGLang and vLLM return). Sample boundaries are not part of a .npy file: keep the trace,
   * or export samples one by one with {@link #exportNpy(RoutingTrace, int, Path)}.
   *
   * @param trace a trace without unrecorded tokens
   * @param path the .npy file, replaced in one step
   * @throws IOException when the file cannot be written
   * @throws TraceFormatException when the trace has unrecorded tokens (a .npy has no mask)
   */
  public static void exportNpy(RoutingTrace trace, Path path) throws IOException {
    refuseMasked(trace);
    int n = Math.toIntExact(trace.totalTokens() * trace.layers() * trace.topK());
    int[] idx = new int[n];
    trace.copyTokens(0, trace.totalTokens(), 0, trace.layers(), idx, 0);
    Npy.write(path, idx, trace.totalTokens(), trace.layers(), trace.topK());
  }

  /**
   * Writes one sample as an int32 .npy of shape [tokens, layers, k].
   *
   * @param trace the trace
   * @param sample a sample without unrecorded tokens
   * @param path the .npy file, replaced in one step
   * @throws IOException when the file cannot be written
   * @throws TraceFormatException when the sample has unrecorded tokens
   */
  public static void exportNpy(RoutingTrace trace, int sample, Path path) throws IOException {
    refuseMasked(trace);
    Npy.write(path, trace.sample(sample), trace.sampleTokens(sample), trace.layers(), trace.topK());
  }

  /** A plain .npy has no mask: writing placeholders of unrecorded rows would replay them. */
  private static void refuseMasked(RoutingTrace trace) {
    long masked = trace.maskedTokens();
    if (masked > 0)
      throw new TraceFormatException("the trace has " + masked + " unrecorded (mask 0) tokens and a plain .npy has no mask;"
          + " export with TraceInterop (trace convert --to megatron|miles|verl) and choose how to write them");
  }

  /**
   * A trace from a .npy array of shape [tokens, layers, k] (or [tokens, k] for one layer), any integer
   * dtype. {@code experts <= 0} infers E as max index + 1; {@code layerIds} null means 0 .. layers-1;
   * {@code sampleOffsets} null means one sample. Indices are validated (range, distinct rows).
   *
   * @param array integer indices [tokens, layers, k] or [tokens, k]
   * @param model the model name to store; null for ""
   * @param experts E, above every index; {@code <= 0} to infer it (the largest index + 1: too small when the
   *     top experts were never chosen)
   * @param layerIds one layer number per column; null for {@code 0 .. layers-1}
   * @param scoreFunction the score function's name to store; null for ""
   * @param sampleOffsets [samples + 1] from 0 to the token count, non-decreasing; null for one sample
   * @return an in-memory trace
   * @throws TraceFormatException for float data, a wrong rank, or an index that does not fit in int32
   * @throws org.moerouter.MoeRouterException {@link org.moerouter.Status#INVALID_ARGUMENT} for bad offsets or
   *     layer ids, or an invalid row (naming sample, token and layer)
   */
  public static RoutingTrace fromNpy(Npy.Array array, String model, int experts, int[] layerIds, String scoreFunction,
      long[] sampleOffsets) {
    Objects.requireNonNull(array, "array");
    if (array.dtype() == Npy.Dtype.F4 || array.dtype() == Npy.Dtype.F8)
      throw new TraceFormatException("routing indices must be integers, the .npy holds " + array.dtype().descr());
    long[] shape = array.shape();
    if (shape.length == 2) shape = new long[] {shape[0], 1, shape[1]};
    if (shape.length != 3)
      throw new TraceFormatException(".npy shape " + Arrays.toString(array.shape()) + " is not [tokens, layers, k] or [tokens, k]");
    if (shape[1] < 1 || shape[2] < 1)
      throw new TraceFormatException(".npy shape " + Arrays.toString(array.shape()) + " has no layers or no experts per token");
    int[] idx = array.toIntArray();
    if (experts <= 0) {
      int max = (int) shape[2] - 1;
      for (int v : idx) max = Math.max(max, v);
      experts = max + 1;
    }
    if (layerIds == null) {
      layerIds = new int[(int) shape[1]];
      for (int i = 0; i < layerIds.length; i++) layerIds[i] = i;
    }
    if (layerIds.length != shape[1])
      throw RoutingTrace.invalid(layerIds.length + " layer ids given for " + shape[1] + " layers in the .npy");
    RoutingTrace.Builder b = RoutingTrace.builder(model == null ? "" : model, experts, (int) shape[2], layerIds,
        scoreFunction == null ? "" : scoreFunction);
    if (sampleOffsets == null) sampleOffsets = new long[] {0, shape[0]};
    if (sampleOffsets.length < 1 || sampleOffsets[0] != 0 || sampleOffsets[sampleOffsets.length - 1] != shape[0])
      throw RoutingTrace.invalid("sample offsets must run from 0 to " + shape[0]);
    int row = (int) (shape[1] * shape[2]);
    for (int s = 0; s + 1 < sampleOffsets.length; s++) {
      if (sampleOffsets[s + 1] < sampleOffsets[s]) throw RoutingTrace.invalid("sample offsets decrease at " + (s + 1));
      b.addSample(idx, (int) sampleOffsets[s] * row, (int) (sampleOffsets[s + 1] - sampleOffsets[s]));
    }
    return b.build();
  }
}
