// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * Any <a href="https://github.com/huggingface/safetensors">safetensors</a> file, as Python's
 * {@code safetensors.numpy.save_file} or {@code safetensors.torch.save_file} writes it: read into
 * {@link Npy.Array}s, and written so that {@code safetensors.numpy.load_file} reads it back. Routing traces
 * of this library are safetensors files too ({@link TraceFiles}); this class serves the layouts of other
 * systems ({@link TraceInterop}).
 *
 * <p>Dtypes: {@code BOOL U8 I8 U16 I32 I64 F32 F64} (others, such as {@code BF16} or {@code U32}, are rejected
 * naming the tensor). Tensors are read whole, so each holds at most {@code Integer.MAX_VALUE} elements.
 * Malformed files raise {@link TraceFormatException} naming the file and the problem: a header that is not
 * strict JSON, data offsets that leave gaps, overlap or run past the file, a shape that does not match its
 * byte range. Writes are atomic (temporary file, fsync, rename).
 *
 * <pre>{@code
 * Safetensors.Contents c = Safetensors.read(Path.of("batch.safetensors"));
 * Npy.Array experts = c.get("routed_experts", path);      // [batch, max_seq, layers, k]
 * Safetensors.write(Path.of("out.safetensors"), Map.of("format", "pt"), Map.of("routed_experts", experts));
 * }</pre>
 *
 * <p>Trap: this is a general reader for the integer and float tensors of routing data, not a model-weight
 * loader: half-precision tensors are rejected, and a whole file is read into the heap.
 */
public final class Safetensors {
  private Safetensors() {}

  /** One tensor's entry in a header: name, dtype, shape and byte range within the data buffer. */
  public static final class TensorInfo {
    private final String name;
    private final String dtype;
    private final long[] shape;
    private final long begin;
    private final long end;

    TensorInfo(String name, String dtype, long[] shape, long begin, long end) {
      this.name = name;
      this.dtype = dtype;
      this.shape = shape;
      this.begin = begin;
      this.end = end;
    }

    /**
     * The tensor's name.
     *
     * @return the header key
     */
    public String name() {
      return name;
    }

    /**
     * The safetensors dtype name.
     *
     * @return "I32", "U8", "BOOL", ... as written in the header
     */
    public String dtype() {
      return dtype;
    }

    /**
     * The shape.
     *
     * @return a new array, one entry per dimension
     */
    public long[] shape() {
      return shape.clone();
    }

    @Override
    public String toString() {
      return name + " " + dtype + " " + Arrays.toString(shape);
    }
  }

  /** A parsed header: metadata (empty when absent), tensors in header order, and where the data starts. */
  public static final class Header {
    private final Map<String, String> metadata;
    private final boolean hasMetadata;
    private final Map<String, TensorInfo> tensors;
    final long dataStart;

    Header(Map<String, String> metadata, boolean hasMetadata, Map<String, TensorInfo> tensors, long dataStart) {
      this.metadata = metadata;
      this.hasMetadata = hasMetadata;
      this.tensors = tensors;
      this.dataStart = dataStart;
    }

    /**
     * The {@code __metadata__} strings.
     *
     * @return an unmodifiable map; empty when the file has none
     */
    public Map<String, String> metadata() {
      return metadata;
    }

    /**
     * Whether the header has a {@code __metadata__} entry (possibly empty).
     *
     * @return true when the entry is present
     */
    public boolean hasMetadata() {
      return hasMetadata;
    }

    /**
     * The tensors, in header order.
     *
     * @return an unmodifiable map by name
     */
    public Map<String, TensorInfo> tensors() {
      return tensors;
    }
  }

  /** A whole file: its header and every tensor's data. */
  public static final class Contents {
    private final Header header;
    private final Map<String, Npy.Array> arrays;

    Contents(Header header, Map<String, Npy.Array> arrays) {
      this.header = header;
      this.arrays = arrays;
    }

    /**
     * The header.
     *
     * @return the parsed header
     */
    public Header header() {
      return header;
    }

    /**
     * The metadata.
     *
     * @return the {@code __metadata__} strings; empty when none
     */
    public Map<String, String> metadata() {
      return header.metadata();
    }

    /**
     * Every tensor, in header order.
     *
     * @return an unmodifiable map by name
     */
    public Map<String, Npy.Array> arrays() {
      return arrays;
    }

    /**
     * One tensor.
     *
     * @param name the tensor's name
     * @param path the file, to name it in the error
     * @return the tensor's data
     * @throws TraceFormatException naming the file and listing the tensors present when the name is missing
     */
    public Npy.Array get(String name, Path path) {
      Npy.Array a = arrays.get(name);
      if (a == null) throw new TraceFormatException(path + ": no tensor '" + name + "' (tensors: " + arrays.keySet() + ")");
      return a;
    }
  }

  // ------------------------------------------------------------------ reading

  /**
   * Reads the header of a safetensors file, without its data.
   *
   * @param path the file
   * @return the parsed and checked header
   * @throws IOException when the file cannot be read
   * @throws TraceFormatException naming the file for a malformed header or layout
   */
  public static Header readHeader(Path path) throws IOException {
    Objects.requireNonNull(path, "path");
    try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
      return header(ch, path);
    }
  }

  /**
   * Reads a whole safetensors file.
   *
   * @param path the file
   * @return its header and every tensor
   * @throws IOException when the file cannot be read
   * @throws TraceFormatException naming the file and the tensor for anything malformed or an unsupported dtype
   */
  public static Contents read(Path path) throws IOException {
    Objects.requireNonNull(path, "path");
    try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
      Header h = header(ch, path);
      Map<String, Npy.Array> out = new LinkedHashMap<>();
      for (TensorInfo t : h.tensors.values()) {
        Npy.Dtype d = npyDtype(t.dtype, t.name, path);
        long n = t.end - t.begin;
        if (n > Integer.MAX_VALUE - 8)
          throw new TraceFormatException(path + ": tensor '" + t.name + "' " + Arrays.toString(t.shape) + " is too large for one Java array");
        ByteBuffer b = ByteBuffer.allocate((int) n).order(ByteOrder.LITTLE_ENDIAN);
        readFully(ch, b, h.dataStart + t.begin);
        out.put(t.name, new Npy.Array(d, t.shape, decode(b, d, (int) (n / d.itemSize()))));
      }
      return new Contents(h, Collections.unmodifiableMap(out));
    } catch (TraceFormatException e) {
      throw e;
    } catch (RuntimeException e) {
      throw new TraceFormatException(path + ": unreadable safetensors file (" + e + ")", e);
    }
  }

  private static Object decode(ByteBuffer b, Npy.Dtype d, int count) {
    switch (d) {
      case B1: case U1: case I1: { byte[] a = new byte[count]; b.get(a); return a; }
      case U2: { short[] a = new short[count]; b.asShortBuffer().get(a); return a; }
      case I4: { int[] a = new int[count]; b.asIntBuffer().get(a); return a; }
      case I8: { long[] a = new long[count]; b.asLongBuffer().get(a); return a; }
      case F4: { float[] a = new float[count]; b.asFloatBuffer().get(a); return a; }
      default: { double[] a = new double[count]; b.asDoubleBuffer().get(a); return a; }
    }
  }

  static Npy.Dtype npyDtype(String dtype, String name, Path path) {
    switch (dtype) {
      case "BOOL": return Npy.Dtype.B1;
      case "U8": return Npy.Dtype.U1;
      case "I8": return Npy.Dtype.I1;
      case "U16": return Npy.Dtype.U2;
      case "I32": return Npy.Dtype.I4;
      case "I64": return Npy.Dtype.I8;
      case "F32": return Npy.Dtype.F4;
      case "F64": return Npy.Dtype.F8;
      default:
        throw new TraceFormatException(path + ": tensor '" + name + "' has dtype " + dtype
            + ", not supported here (BOOL U8 I8 U16 I32 I64 F32 F64)");
    }
  }

  static String safetensorsDtype(Npy.Dtype d) {
    switch (d) {
      case B1: return "BOOL";
      case U1: return "U8";
      case I1: return "I8";
      case U2: return "U16";
      case I4: return "I32";
      case I8: return "I64";
      case F4: return "F32";
      default: return "F64";
    }
  }

  private static int itemSize(String dtype) {
    switch (dtype) {
      case "BOOL": case "U8": case "I8": case "F8_E4M3": case "F8_E5M2": return 1;
      case "U16": case "I16": case "F16": case "BF16": return 2;
      case "U32": case "I32": case "F32": return 4;
      case "U64": case "I64": case "F64": return 8;
      default: return -1;
    }
  }

  /** Parses and checks the header: every tensor entry, and byte ranges tiling the data buffer exactly. */
  static Header header(FileChannel ch, Path path) throws IOException {
    long[] n = new long[1];
    Map<String, Object> root = headerJson(ch, path, n);
    Map<String, String> meta = new LinkedHashMap<>();
    Object m = root.get("__metadata__");
    if (m != null) {
      if (!(m instanceof Map)) throw TraceFiles.fail(path, "__metadata__ is not a JSON object");
      for (Map.Entry<?, ?> e : ((Map<?, ?>) m).entrySet()) {
        if (!(e.getValue() instanceof String)) throw TraceFiles.fail(path, "metadata '" + e.getKey() + "' is not a string");
        meta.put((String) e.getKey(), (String) e.getValue());
      }
    }
    Map<String, TensorInfo> tensors = new LinkedHashMap<>();
    for (Map.Entry<String, Object> e : root.entrySet()) {
      if (e.getKey().equals("__metadata__")) continue;
      String name = e.getKey();
      if (!(e.getValue() instanceof Map)) throw TraceFiles.fail(path, "tensor '" + name + "' is not a JSON object");
      Map<?, ?> t = (Map<?, ?>) e.getValue();
      Object dtype = t.get("dtype"), shape = t.get("shape"), offs = t.get("data_offsets");
      if (!(dtype instanceof String)) throw TraceFiles.fail(path, "tensor '" + name + "' lacks a string dtype");
      if (!(shape instanceof List)) throw TraceFiles.fail(path, "tensor '" + name + "' lacks a shape array");
      if (!(offs instanceof List) || ((List<?>) offs).size() != 2)
        throw TraceFiles.fail(path, "tensor '" + name + "' lacks data_offsets [begin, end]");
      if (t.size() != 3) throw TraceFiles.fail(path, "tensor '" + name + "' has fields other than dtype, shape and data_offsets");
      int item = itemSize((String) dtype);
      if (item < 0) throw TraceFiles.fail(path, "tensor '" + name + "' has unknown dtype " + dtype);
      long[] dims = new long[((List<?>) shape).size()];
      long elements = 1;
      for (int i = 0; i < dims.length; i++) {
        dims[i] = nonNegative(((List<?>) shape).get(i), "tensor '" + name + "' shape", path);
        try {
          elements = Math.multiplyExact(elements, dims[i]);
        } catch (ArithmeticException x) {
          throw TraceFiles.fail(path, "tensor '" + name + "' shape " + Arrays.toString(dims) + " overflows");
        }
      }
      long b = nonNegative(((List<?>) offs).get(0), "tensor '" + name + "' data_offsets", path);
      long en = nonNegative(((List<?>) offs).get(1), "tensor '" + name + "' data_offsets", path);
      if (en < b || en - b != elements * item)
        throw TraceFiles.fail(path, "tensor '" + name + "' data_offsets [" + b + ", " + en + "] span " + (en - b)
            + " bytes, its dtype and shape need " + elements * item);
      tensors.put(name, new TensorInfo(name, (String) dtype, dims, b, en));
    }
    List<TensorInfo> byStart = new ArrayList<>(tensors.values());
    byStart.sort((x, y) -> x.begin != y.begin ? Long.compare(x.begin, y.begin) : Long.compare(x.end, y.end));
    long at = 0;
    String prev = null;
    for (TensorInfo t : byStart) {
      if (t.begin != at)
        throw TraceFiles.fail(path, "tensor '" + t.name + "' starts at data byte " + t.begin + (prev == null ? "" : ", '" + prev
            + "' ends at " + at) + ": the tensors leave a gap or overlap");
      at = t.end;
      prev = t.name;
    }
    long dataLen = ch.size() - 8 - n[0];
    if (at > dataLen) throw TraceFiles.fail(path, "truncated: the tensors need " + at + " data bytes, the file has " + dataLen);
    if (at < dataLen) throw TraceFiles.fail(path, (dataLen - at) + " unexpected bytes after the tensor data");
    return new Header(Collections.unmodifiableMap(meta), m != null, Collections.unmodifiableMap(tensors), 8 + n[0]);
  }

  private static long nonNegative(Object v, String what, Path path) {
    if (!(v instanceof Long) || (Long) v < 0 || (Long) v > (1L << 50))
      throw TraceFiles.fail(path, what + " holds " + Json.write(v) + ", expected a non-negative integer");
    return (Long) v;
  }

  /**
   * The header's JSON object: 8-byte little-endian length, then that many bytes of UTF-8 JSON padded with
   * spaces. {@code lengthOut[0]} receives the length.
   */
  static Map<String, Object> headerJson(FileChannel ch, Path path, long[] lengthOut) throws IOException {
    long size = ch.size();
    if (size < 8) throw TraceFiles.fail(path, "truncated: " + size + " bytes is too short for a safetensors header length");
    ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
    readFully(ch, lenBuf, 0);
    long n = lenBuf.getLong(0);
    if (n < 2 || n > TraceFiles.MAX_HEADER)
      throw TraceFiles.fail(path, "header length " + Long.toUnsignedString(n) + " is invalid (must be in [2, " + TraceFiles.MAX_HEADER + "])");
    if (8 + n > size)
      throw TraceFiles.fail(path, "truncated: header declares " + n + " bytes, the file has " + (size - 8) + " after the length");
    ByteBuffer hb = ByteBuffer.allocate((int) n);
    readFully(ch, hb, 8);
    byte[] header = hb.array();
    int end = header.length;
    while (end > 0 && header[end - 1] == ' ') end--;
    String text;
    try {
      text = StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(header, 0, end)).toString();
    } catch (CharacterCodingException e) {
      throw TraceFiles.fail(path, "header is not valid UTF-8");
    }
    if (!text.startsWith("{")) throw TraceFiles.fail(path, "header is not a JSON object");
    Object parsed;
    try {
      parsed = Json.parse(text);
    } catch (Json.ParseException e) {
      throw TraceFiles.fail(path, "header is not valid JSON: " + e.getMessage());
    }
    if (!(parsed instanceof Map)) throw TraceFiles.fail(path, "header is not a JSON object");
    lengthOut[0] = n;
    @SuppressWarnings("unchecked")
    Map<String, Object> root = (Map<String, Object>) parsed;
    return root;
  }

  static void readFully(FileChannel ch, ByteBuffer b, long pos) throws IOException {
    while (b.hasRemaining()) {
      int r = ch.read(b, pos);
      if (r < 0) throw new IOException("unexpected end of file at " + pos);
      pos += r;
    }
    b.flip();
  }

  // ------------------------------------------------------------------ writing

  /**
   * Writes {@code tensors} (in map order in the header) and {@code metadata} (nullable) as a safetensors file,
   * atomically. The data buffer holds the tensors by descending item size, so that every tensor starts at a
   * multiple of its item size (the header is padded to 8 bytes), as Python's safetensors lays them out.
   *
   * @param path the file, replaced in one step
   * @param metadata the {@code __metadata__} strings; null for none
   * @param tensors the tensors by name, in header order
   * @throws IOException when the file cannot be written (the previous one stays)
   */
  public static void write(Path path, Map<String, String> metadata, Map<String, Npy.Array> tensors) throws IOException {
    Objects.requireNonNull(path, "path");
    Objects.requireNonNull(tensors, "tensors");
    List<Map.Entry<String, Npy.Array>> order = new ArrayList<>(tensors.entrySet());
    for (Map.Entry<String, Npy.Array> e : order)
      if (e.getKey().equals("__metadata__")) throw new IllegalArgumentException("'__metadata__' is not a tensor name");
    order.sort((a, b) -> Integer.compare(b.getValue().dtype().itemSize(), a.getValue().dtype().itemSize()));
    Map<String, long[]> ranges = new LinkedHashMap<>();
    List<ByteBuffer> data = new ArrayList<>();
    long at = 0;
    for (Map.Entry<String, Npy.Array> e : order) {
      ByteBuffer bytes = Npy.encodeData(e.getValue());
      ranges.put(e.getKey(), new long[] {at, at + bytes.remaining()});
      at += bytes.remaining();
      data.add(bytes);
    }
    Map<String, Object> root = new LinkedHashMap<>();
    if (metadata != null) root.put("__metadata__", new LinkedHashMap<>(metadata));
    for (Map.Entry<String, Npy.Array> e : tensors.entrySet()) {
      Map<String, Object> t = new LinkedHashMap<>();
      t.put("dtype", safetensorsDtype(e.getValue().dtype()));
      t.put("shape", e.getValue().shape());
      t.put("data_offsets", ranges.get(e.getKey()));
      root.put(e.getKey(), t);
    }
    ByteBuffer head = encodeHeader(root);
    AtomicFiles.write(path, ch -> {
      AtomicFiles.writeFully(ch, head);
      for (ByteBuffer b : data) AtomicFiles.writeFully(ch, b);
    });
  }

  /**
   * The file's first bytes: the header JSON's length (little-endian u64) and the JSON, padded with spaces to a
   * multiple of 8 so that the data buffer, and with it every tensor, starts 8-byte aligned.
   */
  static ByteBuffer encodeHeader(Map<String, Object> root) {
    byte[] json = Json.write(root).getBytes(StandardCharsets.UTF_8);
    int padded = (json.length + 7) / 8 * 8;
    ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
    head.putLong(padded).put(json);
    while (head.hasRemaining()) head.put((byte) ' ');
    return head.flip();
  }
}
