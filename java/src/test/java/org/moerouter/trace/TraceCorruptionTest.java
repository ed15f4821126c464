// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.*;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.function.UnaryOperator;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.MoeRouterException;

/** Truncated, corrupted and inconsistent files are rejected with precise messages. */
class TraceCorruptionTest {
  @TempDir Path dir;
  RoutingTrace trace;
  byte[] good;
  Path file;

  @BeforeEach
  void setUp() throws Exception {
    trace = TraceTestSupport.random(42, 64, 4, new int[] {1, 3}, new int[] {5, 3});
    file = dir.resolve("t.safetensors");
    TraceFiles.write(trace, file);
    good = Files.readAllBytes(file);
  }

  private String rejected(byte[] bytes) throws Exception {
    Files.write(file, bytes);
    TraceFormatException e = assertThrows(TraceFormatException.class, () -> TraceFiles.read(file));
    assertTrue(e.getMessage().startsWith(file + ": "), e.getMessage());
    return e.getMessage().substring(file.toString().length() + 2);
  }

  private String header(UnaryOperator<String> edit) throws Exception {
    return rejected(TraceTestSupport.rewriteHeader(good, edit));
  }

  @Test
  void truncation() throws Exception {
    assertEquals("truncated: 5 bytes is too short for a safetensors header length", rejected(Arrays.copyOf(good, 5)));
    int ds = TraceTestSupport.dataStart(good);
    assertTrue(rejected(Arrays.copyOf(good, ds - 3)).startsWith("truncated: header declares"));
    assertEquals("truncated: the tensors need " + (good.length - ds) + " data bytes, the file has " + (good.length - ds - 1),
        rejected(Arrays.copyOf(good, good.length - 1)));
    assertEquals("2 unexpected bytes after the tensor data", rejected(Arrays.copyOf(good, good.length + 2)));
    assertEquals("truncated: 0 bytes is too short for a safetensors header length", rejected(new byte[0]));
  }

  @Test
  void badHeaderLengthAndJson() throws Exception {
    byte[] b = good.clone();
    b[7] = (byte) 0x80; // huge / negative length
    assertTrue(rejected(b).startsWith("header length "), rejected(b));
    assertTrue(header(h -> h.substring(0, h.length() - 1)).startsWith("header is not valid JSON"));
    assertEquals("header is not a JSON object", header(h -> "[1,2]"));
    assertTrue(header(h -> h + "}").startsWith("header is not valid JSON"));
    assertTrue(header(h -> h.replace("{\"__metadata__\":{", "{\"__metadata__\":{\"model\":\"x\",")).startsWith("header is not valid JSON"),
        "duplicate keys are rejected");
    byte[] c = good.clone();
    c[12] = (byte) 0xC3; // invalid UTF-8 sequence start followed by ASCII
    c[13] = (byte) 0x28;
    assertEquals("header is not valid UTF-8", rejected(c));
  }

  @Test
  void metadataProblems() throws Exception {
    assertEquals("no __metadata__ in the header: not a routing trace", header(h -> h.replace("\"__metadata__\"", "\"__meta__\"")));
    assertEquals("metadata lacks 'top_k'", header(h -> h.replace("\"top_k\"", "\"topk\"")));
    assertEquals("metadata experts = 'sixty' is not a non-negative integer", header(h -> h.replace("\"experts\":\"64\"", "\"experts\":\"sixty\"")));
    assertEquals("metadata 'experts' is not a string", header(h -> h.replace("\"experts\":\"64\"", "\"experts\":64")));
    assertEquals("top_k = 65 outside [1, experts=64]", header(h -> h.replace("\"top_k\":\"4\"", "\"top_k\":\"65\"")));
    assertEquals("unsupported trace format version '3' (this library reads 1 and 2)", header(h -> h.replace("\"format_version\":\"1\"", "\"format_version\":\"3\"")));
    assertEquals("metadata format is 'other', expected 'moe-router-trace'", header(h -> h.replace("\"moe-router-trace\"", "\"other\"")));
    assertEquals("metadata layer_ids = '[1,x]' is not a JSON array of integers", header(h -> h.replace("[1,3]", "[1,x]")));
    assertEquals("metadata layer_ids repeats layer 1", header(h -> h.replace("[1,3]", "[1,1]")));
    assertEquals("checksum 'abc' is not of the form crc32:xxxxxxxx", header(h -> h.replaceAll("crc32:[0-9a-f]{8}", "abc")));
  }

  @Test
  void wrongShapeDtypeAndCounts() throws Exception {
    // Wrong E for the stored dtype.
    assertEquals("tensor 'indices' has dtype U8 (experts metadata implies U16)", header(h -> h.replace("\"experts\":\"64\"", "\"experts\":\"300\"")));
    assertEquals("tensor 'indices' has dtype F32 (expected U8 or U16)", header(h -> h.replace("\"U8\"", "\"F32\"")));
    // Wrong k and layer count.
    assertEquals("indices shape [8, 2, 4] has k = 4, top_k is 3", header(h -> h.replace("\"top_k\":\"4\"", "\"top_k\":\"3\"")));
    assertEquals("indices shape [8, 2, 4] has 2 layers, layer_ids lists 3", header(h -> h.replace("[1,3]", "[1,3,5]")));
    assertEquals("tensor 'indices' has shape [8,2], expected 3 dimensions", header(h -> h.replace("[8,2,4]", "[8,2]")));
    assertEquals("tensor 'indices' data_offsets [24, 88] span 64 bytes, its dtype and shape need 72",
        header(h -> h.replace("[8,2,4]", "[9,2,4]")));
    assertEquals("tensor 'sample_offsets' has dtype I32 (expected I64)", header(h -> h.replace("\"I64\"", "\"I32\"")));
    assertEquals("unexpected tensor 'extra' (a trace holds 'indices', 'sample_offsets' and optionally 'mask')",
        header(h -> h.substring(0, h.length() - 1) + ",\"extra\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[88,88]}}"));
    assertEquals("tensor 'indices' shape holds -8, expected a non-negative integer", header(h -> h.replace("[8,2,4]", "[-8,2,4]")));
    assertEquals("tensor data_offsets leave a gap or overlap: [0, 24] and [20, 84]",
        header(h -> h.replace("[24,88]", "[20,84]")));
  }

  @Test
  void badSampleOffsets() throws Exception {
    int ds = TraceTestSupport.dataStart(good);
    byte[] b = good.clone();
    b[ds + 8] = 9; // offsets [0, 9, 8]
    assertEquals("sample_offsets[1] = 9 is not in [0, 8]", rejected(TraceTestSupport.resign(b)));
    b = good.clone();
    b[ds] = 1;
    assertEquals("sample_offsets[0] is 1, must be 0", rejected(TraceTestSupport.resign(b)));
    b = good.clone();
    b[ds + 16] = 7;
    assertEquals("sample_offsets end at 7, indices hold 8 tokens", rejected(TraceTestSupport.resign(b)));
  }

  @Test
  void outOfRangeAndDuplicateIndicesWithValidChecksum() throws Exception {
    int ds = TraceTestSupport.dataStart(good);
    int idxStart = ds + 24;
    byte[] b = good.clone();
    // sample 1 token 1 = global token 6, layer position 1 (id 3), slot 2
    b[idxStart + (6 * 2 + 1) * 4 + 2] = (byte) 200;
    byte[] signed = TraceTestSupport.resign(b);
    assertEquals("sample 1 token 1 layer 3: expert 200 out of range [0, 64)", rejected(signed));
    // open() alone accepts it, the access names the position.
    RoutingTrace lazy = TraceFiles.open(file);
    TraceFormatException e = assertThrows(TraceFormatException.class, () -> lazy.expert(1, 1, 1, 2));
    assertEquals(file + ": sample 1 token 1 layer 3: expert 200 out of range [0, 64)", e.getMessage());
    assertThrows(TraceFormatException.class, () -> lazy.sample(1));
    assertEquals(trace.expert(0, 0, 0, 0), lazy.expert(0, 0, 0, 0));

    b = good.clone();
    b[idxStart + 1] = b[idxStart]; // token 0 layer 1: slot 1 duplicates slot 0
    assertEquals("sample 0 token 0 layer 1: expert " + (b[idxStart] & 0xFF) + " appears twice in the top-4 set",
        rejected(TraceTestSupport.resign(b)));
  }

  @Test
  void checksumMismatch() throws Exception {
    byte[] b = good.clone();
    int last = b.length - 1;
    // Keep the value valid and distinct: swap two slots of the last row (a set-preserving change still alters bytes).
    byte x = b[last];
    b[last] = b[last - 1];
    b[last - 1] = x;
    String m = rejected(b);
    assertTrue(m.matches("checksum mismatch: the header records crc32:[0-9a-f]{8}, the content hashes to crc32:[0-9a-f]{8} \\(the file is corrupt\\)"), m);
    // Metadata is covered too.
    m = header(h -> h.replace("\"model\":\"test-model\"", "\"model\":\"test-modem\""));
    assertTrue(m.startsWith("checksum mismatch"), m);
  }

  /** Random byte flips and cuts: either a TraceFormatException or the very same content, never anything else. */
  @Test
  void fuzzedFilesAreRejectedOrUnchanged() throws Exception {
    Random r = new Random(1234);
    int accepted = 0;
    for (int trial = 0; trial < 1500; trial++) {
      byte[] b = good.clone();
      int kind = r.nextInt(4);
      if (kind == 0) {
        b[r.nextInt(b.length)] ^= (byte) (1 << r.nextInt(8));
      } else if (kind == 1) {
        int flips = 1 + r.nextInt(8);
        for (int i = 0; i < flips; i++) b[r.nextInt(b.length)] = (byte) r.nextInt(256);
      } else if (kind == 2) {
        b = Arrays.copyOf(b, r.nextInt(b.length));
      } else {
        int ds = TraceTestSupport.dataStart(b);
        b[r.nextInt(ds)] = (byte) "{}[],:\"0123456789 ".charAt(r.nextInt(18));
      }
      Files.write(file, b);
      try {
        RoutingTrace t = TraceFiles.read(file);
        assertTrue(t.contentEquals(trace), "trial " + trial + ": a corrupted file was read with different content");
        accepted++;
      } catch (TraceFormatException e) {
        assertNotNull(e.getMessage());
        assertFalse(e.getMessage().contains("\n"), e.getMessage());
      } catch (MoeRouterException e) {
        fail("trial " + trial + ": not a TraceFormatException: " + e);
      }
    }
    assertTrue(accepted < 150, "almost every corruption is detected; accepted " + accepted);
  }
}
