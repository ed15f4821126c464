package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TraceCliTest {
  @TempDir Path dir;
  String out, err;

  int run(String... args) {
    ByteArrayOutputStream o = new ByteArrayOutputStream(), e = new ByteArrayOutputStream();
    int rc = TraceCli.run(args, new PrintStream(o, true, StandardCharsets.UTF_8), new PrintStream(e, true, StandardCharsets.UTF_8));
    out = o.toString(StandardCharsets.UTF_8);
    err = e.toString(StandardCharsets.UTF_8);
    return rc;
  }

  @Test
  void inspectConvertDiff() throws Exception {
    RoutingTrace t = TraceTestSupport.random(8, 64, 4, new int[] {3, 5}, new int[] {6, 4});
    Path a = dir.resolve("a.safetensors");
    TraceFiles.write(t, a);
    assertEquals(0, run("inspect", a.toString()), err);
    assertTrue(out.contains("experts:        64"), out);
    assertTrue(out.contains("indices:        U8 [10, 2, 4]"), out);
    assertTrue(out.contains("(verified)"), out);

    Path npy = dir.resolve("a.npy");
    assertEquals(0, run("convert", a.toString(), npy.toString()), err);
    assertTrue(err.contains("2 samples concatenated"), err);
    Path back = dir.resolve("b.safetensors");
    assertEquals(0, run("convert", npy.toString(), back.toString(), "--experts", "64", "--model", "test-model", "--score", "softmax",
        "--layer-ids", "3,5", "--sample-offsets", "0,6,10"), err);
    assertTrue(TraceFiles.read(back).contentEquals(t));
    assertEquals(0, run("convert", npy.toString(), dir.resolve("c.safetensors").toString()), err);
    assertTrue(err.startsWith("note: --experts not given; inferred E = "), err);

    assertEquals(0, run("diff", a.toString(), back.toString()), err);
    assertTrue(out.contains("     all           10       0.000000       1.000000"), out);
    assertTrue(out.contains("tokens with any difference: 0 of 10 (0.000000)"), out);
    assertEquals(0, run("diff", a.toString(), npy.toString()), err); // .npy side: one sample, layer ids 0..1
  }

  @Test
  void badFilesGiveOneLineErrors() throws Exception {
    Path bad = dir.resolve("bad.safetensors");
    Files.write(bad, new byte[] {1, 2, 3});
    assertEquals(1, run("inspect", bad.toString()));
    assertEquals("error: " + bad + ": truncated: 3 bytes is too short for a safetensors header length\n", err);
    assertEquals(1, run("inspect", dir.resolve("missing.safetensors").toString()));
    assertEquals("error: " + dir.resolve("missing.safetensors") + ": no such file\n", err);
    Path badNpy = dir.resolve("x.npy");
    Files.write(badNpy, "not numpy at all".getBytes());
    assertEquals(1, run("convert", badNpy.toString(), dir.resolve("y.safetensors").toString()));
    assertEquals("error: " + badNpy + ": not a .npy file (bad magic string)\n", err);
    assertEquals(2, run("convert", "a.txt", "b.txt"));
    assertEquals(2, run("frobnicate"));
    assertEquals(2, run());
    assertEquals(2, run("convert", "a.npy", "b.safetensors", "--experts", "x"));
    assertFalse(err.contains("\tat "), "no stack traces");
  }
}
