// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * A small, self-contained reader and writer of NumPy {@code .npy} files (format versions 1.0, 2.0 and
 * 3.0, C order), for exchanging routing indices with SGLang, vLLM and other Python stacks.
 *
 * <p>Element types: {@code |b1 |u1 |i1 u2 i4 i8 f4 f8}, little- or big-endian. Arrays are read whole into
 * a typed Java array ({@link Array#data()}), so they hold at most {@code Integer.MAX_VALUE} elements.
 * Malformed files (bad magic, unparseable header, Fortran order, unsupported dtype, truncated data,
 * trailing bytes) raise {@link TraceFormatException} naming the file and the problem; file-system
 * failures raise {@link IOException}. Writes are atomic (temporary file, fsync, rename).
 *
 * <pre>{@code
 * Npy.Array a = Npy.read(Path.of("routed_experts.npy"));   // e.g. shape [tokens, layers, k]
 * int[] idx = a.toIntArray();
 * Npy.write(Path.of("out.npy"), idx, a.shape());           // '<i4'
 * }</pre>
 *
 * <p>Traps: files are read whole into the heap (no memory mapping: use {@link TraceFiles#open} for large
 * traces); and {@link Array#getLong(int)} reads U1 and U2 unsigned but I1 signed, so a -1 cast to
 * uint8 by numpy reads as 255.
 */
public final class Npy {
  private Npy() {}

  private static final byte[] MAGIC = {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y'};
  private static final int MAX_HEADER = 1 << 20;

  /** Element type; the Java array type of {@link Array#data()} is given for each. */
  public enum Dtype {
    /** {@code |u1}: byte[], values read unsigned. */
    U1(1, "u1"),
    /** {@code |i1}: byte[]. */
    I1(1, "i1"),
    /** {@code <u2}: short[], values read unsigned. */
    U2(2, "u2"),
    /** {@code <i4}: int[]. */
    I4(4, "i4"),
    /** {@code <i8}: long[]. */
    I8(8, "i8"),
    /** {@code <f4}: float[]. */
    F4(4, "f4"),
    /** {@code <f8}: double[]. */
    F8(8, "f8"),
    /** {@code |b1} (numpy bool): byte[], any non-zero byte reads as 1. */
    B1(1, "b1");

    private final int itemSize;
    private final String code;

    Dtype(int itemSize, String code) {
      this.itemSize = itemSize;
      this.code = code;
    }

    /**
     * Bytes per element in a file.
     *
     * @return 1, 2, 4 or 8
     */
    public int itemSize() {
      return itemSize;
    }

    /**
     * The numpy descr written for this type (little-endian).
     *
     * @return for example {@code "<i4"} or {@code "|u1"}
     */
    public String descr() {
      return (itemSize == 1 ? "|" : "<") + code;
    }

    static Dtype parse(String descr, String where) {
      if (descr.length() == 3) {
        char order = descr.charAt(0);
        String code = descr.substring(1);
        for (Dtype d : values()) {
          if (!d.code.equals(code)) continue;
          if (order == '|' || order == '<' || order == '=' || order == '>') return d;
        }
      }
      throw new TraceFormatException(where + ": unsupported dtype '" + descr
          + "' (supported: |u1 |i1 <u2 <i4 <i8 <f4 <f8 |b1, also big-endian)");
    }
  }

  /** An array read from or written to a {@code .npy} file: dtype, shape, C-order data. */
  public static final class Array {
    private final Dtype dtype;
    private final long[] shape;
    private final Object data;

    /**
     * An array over existing data (not copied; the shape is).
     *
     * @param dtype the element type
     * @param shape the dimensions, each in {@code [0, Integer.MAX_VALUE]}
     * @param data the Java array type of {@code dtype} (see {@link Dtype}), exactly the product of
     *     {@code shape} elements, C order
     * @throws IllegalArgumentException when the data's type or length does not match
     * @throws TraceFormatException for a negative or too large dimension
     */
    public Array(Dtype dtype, long[] shape, Object data) {
      this.dtype = Objects.requireNonNull(dtype, "dtype");
      this.shape = Objects.requireNonNull(shape, "shape").clone();
      this.data = Objects.requireNonNull(data, "data");
      long n = elementCount(this.shape, "shape");
      int len = java.lang.reflect.Array.getLength(data);
      Class<?> want = javaType(dtype);
      if (data.getClass() != want)
        throw new IllegalArgumentException(dtype + " data must be " + want.getSimpleName() + ", got " + data.getClass().getSimpleName());
      if (len != n) throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " holds " + n + " elements, data has " + len);
    }

    /**
     * The element type.
     *
     * @return the dtype read from the header, or given to the constructor
     */
    public Dtype dtype() {
      return dtype;
    }

    /**
     * The dimensions.
     *
     * @return a new array, one entry per dimension (empty for a 0-d scalar)
     */
    public long[] shape() {
      return shape.clone();
    }

    /**
     * Number of dimensions.
     *
     * @return the length of {@link #shape()}
     */
    public int ndim() {
      return shape.length;
    }

    /**
     * Dimension i.
     *
     * @param i a dimension, in {@code [0, ndim())}
     * @return its size, at most {@code Integer.MAX_VALUE} (checked on construction and read)
     * @throws ArrayIndexOutOfBoundsException when i is outside {@code [0, ndim())}
     */
    public long dim(int i) {
      return shape[i];
    }

    /**
     * Number of elements.
     *
     * @return the product of the shape
     */
    public int size() {
      return java.lang.reflect.Array.getLength(data);
    }

    /**
     * The typed array itself (not a copy).
     *
     * @return a byte[], short[], int[], long[], float[] or double[], as {@link Dtype} lists
     */
    public Object data() {
      return data;
    }

    /**
     * Element i as a long (unsigned for U1/U2); floating types must hold an integral value.
     *
     * @param i a flat C-order index, in {@code [0, size())}
     * @return the value
     * @throws TraceFormatException when a floating element is not an integer
     * @throws ArrayIndexOutOfBoundsException when i is outside the array
     */
    public long getLong(int i) {
      switch (dtype) {
        case U1: return ((byte[]) data)[i] & 0xFF;
        case B1: return ((byte[]) data)[i] != 0 ? 1 : 0;
        case I1: return ((byte[]) data)[i];
        case U2: return ((short[]) data)[i] & 0xFFFF;
        case I4: return ((int[]) data)[i];
        case I8: return ((long[]) data)[i];
        case F4: return integral(((float[]) data)[i], i);
        default: return integral(((double[]) data)[i], i);
      }
    }

    /**
     * Element i as a double (integers converted exactly up to 2^53).
     *
     * @param i a flat C-order index, in {@code [0, size())}
     * @return the value
     * @throws ArrayIndexOutOfBoundsException when i is outside the array
     */
    public double getDouble(int i) {
      switch (dtype) {
        case F4: return ((float[]) data)[i];
        case F8: return ((double[]) data)[i];
        default: return getLong(i);
      }
    }

    /**
     * The elements as int[]; values outside the int range are rejected.
     *
     * @return a new array of {@link #size()} elements (a copy, also for I4)
     * @throws TraceFormatException naming the first element that is not an int32 integer
     */
    public int[] toIntArray() {
      if (dtype == Dtype.I4) return ((int[]) data).clone();
      int[] out = new int[size()];
      for (int i = 0; i < out.length; i++) {
        long v = getLong(i);
        if (v != (int) v) throw new TraceFormatException("element " + i + " (" + v + ") does not fit in int32");
        out[i] = (int) v;
      }
      return out;
    }

    /**
     * The elements as float[], rounded to float32 where needed.
     *
     * @return a new array of {@link #size()} elements
     */
    public float[] toFloatArray() {
      float[] out = new float[size()];
      for (int i = 0; i < out.length; i++) out[i] = (float) getDouble(i);
      return out;
    }

    private static long integral(double v, int i) {
      if (v != Math.rint(v) || Double.isInfinite(v) || Math.abs(v) > 9.0e15)
        throw new TraceFormatException("element " + i + " (" + v + ") is not an integer");
      return (long) v;
    }

    @Override
    public String toString() {
      return "Npy.Array{" + dtype.descr() + ", shape=" + Arrays.toString(shape) + "}";
    }
  }

  static Class<?> javaType(Dtype d) {
    switch (d) {
      case U1: case I1: case B1: return byte[].class;
      case U2: return short[].class;
      case I4: return int[].class;
      case I8: return long[].class;
      case F4: return float[].class;
      default: return double[].class;
    }
  }

  static long elementCount(long[] shape, String where) {
    long n = 1;
    for (long d : shape) {
      if (d < 0) throw new TraceFormatException(where + ": negative dimension in shape " + Arrays.toString(shape));
      // Callers index with int: a dimension must survive (int) even when another one is 0.
      if (d > Integer.MAX_VALUE)
        throw new TraceFormatException(where + ": dimension " + d + " in shape " + Arrays.toString(shape)
            + " exceeds " + Integer.MAX_VALUE);
      try {
        n = Math.multiplyExact(n, d);
      } catch (ArithmeticException e) {
        throw new TraceFormatException(where + ": shape " + Arrays.toString(shape) + " overflows");
      }
    }
    return n;
  }

  // ------------------------------------------------------------------ reading

  /**
   * Reads a whole {@code .npy} file.
   *
   * @param path the file
   * @return the array
   * @throws IOException when the file cannot be read
   * @throws TraceFormatException naming the file for anything malformed
   */
  public static Array read(Path path) throws IOException {
    Objects.requireNonNull(path, "path");
    try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
      long size = ch.size();
      if (size > Integer.MAX_VALUE) {
        // Parse the header from the start to give the precise reason.
        ByteBuffer head = ByteBuffer.allocate((int) Math.min(size, MAX_HEADER + 16));
        while (head.hasRemaining() && ch.read(head) >= 0) {}
        head.flip();
        Header h = parseHeader(head, path.toString());
        throw new TraceFormatException(path + ": " + Arrays.toString(h.shape) + " " + h.dtype.descr()
            + " is too large for one Java array");
      }
      ByteBuffer buf = ByteBuffer.allocate((int) size);
      while (buf.hasRemaining() && ch.read(buf) >= 0) {}
      buf.flip();
      return read(buf, path.toString());
    }
  }

  /**
   * Reads an array from the bytes of a {@code .npy} file.
   *
   * @param file the file's bytes, from its position to its limit (not consumed)
   * @param where names the file in errors
   * @return the array
   * @throws TraceFormatException naming {@code where} for anything malformed
   */
  public static Array read(ByteBuffer file, String where) {
    ByteBuffer b = file.duplicate();
    Header h = parseHeader(b, where);
    long n = elementCount(h.shape, where);
    long need = n * h.dtype.itemSize;
    if (n > Integer.MAX_VALUE - 8)
      throw new TraceFormatException(where + ": shape " + Arrays.toString(h.shape) + " is too large for one Java array");
    if (b.remaining() < need)
      throw new TraceFormatException(where + ": truncated: shape " + Arrays.toString(h.shape) + " " + h.descr
          + " needs " + need + " data bytes, the file has " + b.remaining());
    if (b.remaining() > need)
      throw new TraceFormatException(where + ": " + (b.remaining() - need) + " unexpected bytes after the data of shape "
          + Arrays.toString(h.shape) + " " + h.descr);
    b.order(h.order);
    int count = (int) n;
    Object data;
    switch (h.dtype) {
      case U1: case I1: case B1: { byte[] a = new byte[count]; b.get(a); data = a; break; }
      case U2: { short[] a = new short[count]; b.asShortBuffer().get(a); data = a; break; }
      case I4: { int[] a = new int[count]; b.asIntBuffer().get(a); data = a; break; }
      case I8: { long[] a = new long[count]; b.asLongBuffer().get(a); data = a; break; }
      case F4: { float[] a = new float[count]; b.asFloatBuffer().get(a); data = a; break; }
      default: { double[] a = new double[count]; b.asDoubleBuffer().get(a); data = a; break; }
    }
    return new Array(h.dtype, h.shape, data);
  }

  private static final class Header {
    Dtype dtype;
    String descr;
    ByteOrder order;
    long[] shape;
  }

  private static Header parseHeader(ByteBuffer b, String where) {
    if (b.remaining() < 10) throw new TraceFormatException(where + ": truncated: " + b.remaining() + " bytes is too short for a .npy file");
    for (int i = 0; i < MAGIC.length; i++)
      if (b.get() != MAGIC[i]) throw new TraceFormatException(where + ": not a .npy file (bad magic string)");
    int major = b.get() & 0xFF, minor = b.get() & 0xFF;
    if (major < 1 || major > 3 || minor != 0)
      throw new TraceFormatException(where + ": unsupported .npy format version " + major + "." + minor);
    b.order(ByteOrder.LITTLE_ENDIAN);
    long hlen;
    if (major == 1) {
      hlen = b.getShort() & 0xFFFF;
    } else {
      if (b.remaining() < 4) throw new TraceFormatException(where + ": truncated .npy header");
      hlen = b.getInt() & 0xFFFFFFFFL;
    }
    if (hlen > MAX_HEADER) throw new TraceFormatException(where + ": .npy header length " + hlen + " is implausible");
    if (b.remaining() < hlen)
      throw new TraceFormatException(where + ": truncated: .npy header declares " + hlen + " bytes, " + b.remaining() + " remain");
    byte[] hb = new byte[(int) hlen];
    b.get(hb);
    String text = new String(hb, major == 3 ? StandardCharsets.UTF_8 : StandardCharsets.ISO_8859_1);
    Map<String, Object> dict = new DictParser(text, where).parse();
    Object descr = dict.get("descr"), fortran = dict.get("fortran_order"), shape = dict.get("shape");
    if (!(descr instanceof String)) throw new TraceFormatException(where + ": .npy header lacks a string 'descr'");
    if (!(fortran instanceof Boolean)) throw new TraceFormatException(where + ": .npy header lacks a boolean 'fortran_order'");
    if (!(shape instanceof long[])) throw new TraceFormatException(where + ": .npy header lacks a tuple 'shape'");
    Header h = new Header();
    h.descr = (String) descr;
    h.dtype = Dtype.parse(h.descr, where);
    h.order = h.descr.charAt(0) == '>' ? ByteOrder.BIG_ENDIAN : ByteOrder.LITTLE_ENDIAN;
    h.shape = (long[]) shape;
    int nontrivial = 0;
    for (long d : h.shape) if (d != 1) nontrivial++;
    if ((Boolean) fortran && nontrivial > 1)
      throw new TraceFormatException(where + ": Fortran-order arrays are not supported (save with C order, np.ascontiguousarray)");
    return h;
  }

  /** Parses the Python dict literal of a .npy header: strings, True/False, tuples of integers. */
  private static final class DictParser {
    private final String s;
    private final String where;
    private int p;

    DictParser(String s, String where) {
      this.s = s;
      this.where = where;
    }

    Map<String, Object> parse() {
      Map<String, Object> out = new LinkedHashMap<>();
      skip();
      expect('{');
      skip();
      while (peek() != '}') {
        String key = string();
        skip();
        expect(':');
        skip();
        Object v = value();
        if (out.put(key, v) != null) throw fail("duplicate key '" + key + "'");
        skip();
        if (peek() == ',') {
          p++;
          skip();
        } else if (peek() != '}') {
          throw fail("expected ',' or '}'");
        }
      }
      p++;
      skip();
      if (p != s.length()) throw fail("unexpected text after the header dict");
      return out;
    }

    private Object value() {
      char c = peek();
      if (c == '\'' || c == '"') return string();
      if (s.startsWith("True", p)) {
        p += 4;
        return Boolean.TRUE;
      }
      if (s.startsWith("False", p)) {
        p += 5;
        return Boolean.FALSE;
      }
      if (c == '(') return tuple();
      throw fail("unsupported value");
    }

    private long[] tuple() {
      expect('(');
      long[] dims = new long[0];
      skip();
      while (peek() != ')') {
        int start = p;
        while (p < s.length() && Character.isDigit(s.charAt(p))) p++;
        if (start == p) throw fail("expected a non-negative integer in the shape");
        if (p - start > 18) throw fail("shape dimension too large");
        dims = Arrays.copyOf(dims, dims.length + 1);
        dims[dims.length - 1] = Long.parseLong(s.substring(start, p));
        if (p < s.length() && s.charAt(p) == 'L') p++;
        skip();
        if (peek() == ',') {
          p++;
          skip();
        } else if (peek() != ')') {
          throw fail("expected ',' or ')' in the shape");
        }
      }
      p++;
      if (dims.length > 32) throw fail("more than 32 dimensions");
      return dims;
    }

    private String string() {
      char q = peek();
      if (q != '\'' && q != '"') throw fail("expected a string");
      int end = s.indexOf(q, p + 1);
      if (end < 0) throw fail("unterminated string");
      String v = s.substring(p + 1, end);
      p = end + 1;
      return v;
    }

    private void skip() {
      while (p < s.length() && (s.charAt(p) == ' ' || s.charAt(p) == '\n' || s.charAt(p) == '\t' || s.charAt(p) == '\r')) p++;
    }

    private char peek() {
      if (p >= s.length()) throw fail("unexpected end of the header");
      return s.charAt(p);
    }

    private void expect(char c) {
      if (peek() != c) throw fail("expected '" + c + "'");
      p++;
    }

    private TraceFormatException fail(String what) {
      return new TraceFormatException(where + ": bad .npy header at character " + p + ": " + what);
    }
  }

  // ------------------------------------------------------------------ writing

  /**
   * Writes int32 data ({@code <i4}) of the given shape, atomically.
   *
   * @param path the file, replaced in one step
   * @param data the elements, C order
   * @param shape the dimensions; their product must be {@code data.length}
   * @throws IOException when the file cannot be written (the previous one stays)
   * @throws IllegalArgumentException when the shape does not match the data
   */
  public static void write(Path path, int[] data, long... shape) throws IOException {
    write(path, new Array(Dtype.I4, shape, data));
  }

  /**
   * Writes float32 data ({@code <f4}) of the given shape, atomically.
   *
   * @param path the file, replaced in one step
   * @param data the elements, C order
   * @param shape the dimensions; their product must be {@code data.length}
   * @throws IOException when the file cannot be written (the previous one stays)
   * @throws IllegalArgumentException when the shape does not match the data
   */
  public static void write(Path path, float[] data, long... shape) throws IOException {
    write(path, new Array(Dtype.F4, shape, data));
  }

  /**
   * Writes any array (version 1.0 header, little-endian, C order), atomically.
   *
   * @param path the file, replaced in one step
   * @param array the array
   * @throws IOException when the file cannot be written (the previous one stays)
   */
  public static void write(Path path, Array array) throws IOException {
    Objects.requireNonNull(array, "array");
    ByteBuffer bytes = encode(array);
    AtomicFiles.write(path, ch -> AtomicFiles.writeFully(ch, bytes));
  }

  /**
   * The complete bytes of a {@code .npy} file holding {@code array}.
   *
   * @param array the array
   * @return a buffer from the magic string to the last element, little-endian
   */
  public static ByteBuffer encode(Array array) {
    StringBuilder shape = new StringBuilder("(");
    long[] dims = array.shape;
    for (int i = 0; i < dims.length; i++) {
      if (i > 0) shape.append(", ");
      shape.append(dims[i]);
    }
    if (dims.length == 1) shape.append(',');
    shape.append(')');
    String dict = "{'descr': '" + array.dtype.descr() + "', 'fortran_order': False, 'shape': " + shape + ", }";
    int unpadded = MAGIC.length + 2 + 2 + dict.length() + 1;
    int total = (unpadded + 63) / 64 * 64;
    StringBuilder header = new StringBuilder(dict);
    while (header.length() < total - MAGIC.length - 4 - 1) header.append(' ');
    header.append('\n');
    ByteBuffer data = encodeData(array);
    if (total + (long) data.remaining() > Integer.MAX_VALUE) throw new IllegalArgumentException("array too large for one .npy buffer");
    ByteBuffer b = ByteBuffer.allocate(total + data.remaining()).order(ByteOrder.LITTLE_ENDIAN);
    b.put(MAGIC).put((byte) 1).put((byte) 0).putShort((short) header.length());
    b.put(header.toString().getBytes(StandardCharsets.ISO_8859_1));
    b.put(data);
    b.flip();
    return b;
  }

  // ------------------------------------------------------------------ .npz

  /**
   * The arrays of a {@code .npz} archive, as {@code np.savez} and {@code np.savez_compressed} write it and
   * {@code np.load} reads it: by name ({@code arr_0, arr_1, ...}, or the keyword names), in archive order.
   * Errors as for {@link #read(Path)}, naming the entry; an entry that is not a {@code .npy} and an
   * archive without arrays are {@link TraceFormatException}s.
   *
   * @param path the archive
   * @return the arrays by entry name without {@code .npy}, in archive order
   * @throws IOException when the file cannot be read
   * @throws TraceFormatException naming the archive and entry for anything malformed
   */
  public static Map<String, Array> readNpz(Path path) throws IOException {
    List<Map.Entry<String, Array>> entries = new ArrayList<>();
    TraceInterop.readNpz(path, entries);
    Map<String, Array> out = new LinkedHashMap<>();
    for (Map.Entry<String, Array> e : entries)
      if (out.put(e.getKey(), e.getValue()) != null) throw new TraceFormatException(path + ": two arrays named '" + e.getKey() + "'");
    return out;
  }

  /**
   * Writes {@code arrays} as a {@code .npz} archive in map order, as {@code np.savez} does (stored entries
   * {@code NAME.npy}, so {@code np.load(path)[NAME]} reads each back), atomically. The bytes depend only on
   * the arrays (entry times are fixed).
   *
   * @param path the archive, replaced in one step
   * @param arrays the arrays by name (without {@code .npy}), in the order to write
   * @throws IOException when the file cannot be written (the previous one stays)
   */
  public static void writeNpz(Path path, Map<String, Array> arrays) throws IOException {
    Objects.requireNonNull(arrays, "arrays");
    TraceInterop.writeNpz(path, arrays);
  }

  /** The raw little-endian C-order bytes of {@code array}'s data (no header). */
  static ByteBuffer encodeData(Array array) {
    long dataBytes = (long) array.size() * array.dtype.itemSize;
    if (dataBytes > Integer.MAX_VALUE - 8) throw new IllegalArgumentException("array too large for one buffer");
    ByteBuffer b = ByteBuffer.allocate((int) dataBytes).order(ByteOrder.LITTLE_ENDIAN);
    Object d = array.data;
    switch (array.dtype) {
      case U1: case I1: case B1: b.put((byte[]) d); break;
      case U2: b.asShortBuffer().put((short[]) d); break;
      case I4: b.asIntBuffer().put((int[]) d); break;
      case I8: b.asLongBuffer().put((long[]) d); break;
      case F4: b.asFloatBuffer().put((float[]) d); break;
      default: b.asDoubleBuffer().put((double[]) d); break;
    }
    b.position(0);
    return b;
  }
}
