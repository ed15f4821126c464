// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import org.moerouter.TestData;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.function.UnaryOperator;
import java.util.zip.CRC32;

/** Random traces and byte-level surgery on trace files. */
public final class TraceTestSupport {
  private TraceTestSupport() {}

  static final ObjectMapper JSON = new ObjectMapper();

  /** A random trace: each row a random set of k distinct experts. */
  public static RoutingTrace random(long seed, int experts, int k, int[] layerIds, int[] sampleTokens) {
    Random r = new Random(seed);
    RoutingTrace.Builder b = RoutingTrace.builder("test-model", experts, k, layerIds, "softmax");
    for (int tokens : sampleTokens) b.addSample(TestData.randomSelection(r, tokens * layerIds.length, k, experts));
    return b.build();
  }

  static long headerLength(byte[] file) {
    return ByteBuffer.wrap(file).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
  }

  static String headerText(byte[] file) {
    return new String(file, 8, (int) headerLength(file), StandardCharsets.UTF_8).trim();
  }

  static int dataStart(byte[] file) {
    return (int) (8 + headerLength(file));
  }

  /** Replaces the header with {@code edit(header)}, padded again; data bytes unchanged. */
  public static byte[] rewriteHeader(byte[] file, UnaryOperator<String> edit) {
    byte[] json = edit.apply(headerText(file)).getBytes(StandardCharsets.UTF_8);
    int padded = (json.length + 7) / 8 * 8;
    byte[] data = Arrays.copyOfRange(file, dataStart(file), file.length);
    ByteBuffer b = ByteBuffer.allocate(8 + padded + data.length).order(ByteOrder.LITTLE_ENDIAN);
    b.putLong(padded).put(json);
    while (b.position() < 8 + padded) b.put((byte) ' ');
    b.put(data);
    return b.array();
  }

  /** Recomputes the checksum so that only the intended defect remains. */
  static byte[] resign(byte[] file) throws Exception {
    ObjectNode root = (ObjectNode) JSON.readTree(headerText(file));
    ObjectNode meta = (ObjectNode) root.get("__metadata__");
    Map<String, String> m = new LinkedHashMap<>();
    for (Iterator<Map.Entry<String, com.fasterxml.jackson.databind.JsonNode>> it = meta.fields(); it.hasNext();) {
      Map.Entry<String, com.fasterxml.jackson.databind.JsonNode> e = it.next();
      m.put(e.getKey(), e.getValue().asText());
    }
    CRC32 crc = new CRC32();
    crc.update(file, dataStart(file), file.length - dataStart(file));
    crc.update(TraceFiles.canonical(m));
    meta.put("checksum", String.format("crc32:%08x", crc.getValue()));
    String text = JSON.writeValueAsString(root);
    return rewriteHeader(file, h -> text);
  }
}
