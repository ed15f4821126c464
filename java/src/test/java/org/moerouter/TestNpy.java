package org.moerouter;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Minimal .npy reader for the golden files (little-endian f4/f8/i4, C order). */
final class TestNpy {
  final int[] shape;
  final String dtype;
  final ByteBuffer data;

  private TestNpy(int[] shape, String dtype, ByteBuffer data) {
    this.shape = shape;
    this.dtype = dtype;
    this.data = data;
  }

  static TestNpy read(Path file) throws IOException {
    ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(file)).order(ByteOrder.LITTLE_ENDIAN);
    int major = b.get(6);
    int headerLen = major == 1 ? Short.toUnsignedInt(b.getShort(8)) : b.getInt(8);
    int start = major == 1 ? 10 : 12;
    String header = new String(b.array(), start, headerLen, java.nio.charset.StandardCharsets.US_ASCII);
    Matcher d = Pattern.compile("'descr':\\s*'([^']+)'").matcher(header);
    Matcher s = Pattern.compile("'shape':\\s*\\(([^)]*)\\)").matcher(header);
    if (!d.find() || !s.find() || header.contains("'fortran_order': True")) throw new IOException("bad npy " + file);
    String[] parts = s.group(1).split(",");
    int n = 0;
    int[] shape = new int[parts.length];
    for (String p : parts) if (!p.isBlank()) shape[n++] = Integer.parseInt(p.trim());
    shape = java.util.Arrays.copyOf(shape, n);
    b.position(start + headerLen);
    return new TestNpy(shape, d.group(1), b.slice().order(ByteOrder.LITTLE_ENDIAN));
  }

  float[] floats() {
    int n = data.remaining() / (dtype.endsWith("8") ? 8 : 4);
    float[] out = new float[n];
    for (int i = 0; i < n; i++) out[i] = dtype.equals("<f8") ? (float) data.getDouble(i * 8) : data.getFloat(i * 4);
    return out;
  }

  double[] doubles() {
    int n = data.remaining() / (dtype.endsWith("8") ? 8 : 4);
    double[] out = new double[n];
    for (int i = 0; i < n; i++) out[i] = dtype.equals("<f8") ? data.getDouble(i * 8) : data.getFloat(i * 4);
    return out;
  }

  int[] ints() {
    if (!dtype.equals("<i4")) throw new IllegalStateException("not int32: " + dtype);
    int[] out = new int[data.remaining() / 4];
    data.asIntBuffer().get(out);
    return out;
  }
}
