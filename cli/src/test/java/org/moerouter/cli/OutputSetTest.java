// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.WritableByteChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.trace.Npy;

/** The route command's outputs are replaced as a set: all new after success, all old after a failure. */
class OutputSetTest {
  @TempDir Path dir;

  static List<String> names(Path d) throws IOException {
    try (Stream<Path> s = Files.list(d)) {
      return s.map(p -> p.getFileName().toString()).sorted().collect(Collectors.toList());
    }
  }

  /** Runs route on fresh logits of the given seed, into dir/o. */
  MainTest.Run route(long seed, boolean grad) throws Exception {
    int t = 12, e = 16, k = 2;
    float[] l = new float[t * e];
    java.util.SplittableRandom rnd = new java.util.SplittableRandom(seed);
    for (int i = 0; i < l.length; i++) l[i] = (float) rnd.nextGaussian();
    Npy.write(dir.resolve("l" + seed + ".npy"), l, t, e);
    float[] dw = new float[t * k];
    Arrays.fill(dw, 1f);
    Npy.write(dir.resolve("dw.npy"), dw, t, k);
    return grad
        ? MainTest.run("route", "--logits", dir.resolve("l" + seed + ".npy").toString(), "--score", "softmax", "--topk",
            "2", "--grad-weights", dir.resolve("dw.npy").toString(), "--out", dir.resolve("o").toString())
        : MainTest.run("route", "--logits", dir.resolve("l" + seed + ".npy").toString(), "--score", "softmax", "--topk",
            "2", "--out", dir.resolve("o").toString());
  }

  byte[] read(String name) throws IOException {
    return Files.readAllBytes(dir.resolve("o").resolve(name));
  }

  @Test
  void anOutputNameTakenByADirectoryFailsBeforeAnyFileChanges() throws Exception {
    assertEquals(0, route(1, false).status);
    byte[] idx = read("idx.npy"), w = read("weights.npy");
    Files.createDirectory(dir.resolve("o/grad_logits.npy"));
    MainTest.Run r = route(2, true);
    assertEquals(1, r.status, r.err);
    assertEquals("moe-router: error: " + dir.resolve("o/grad_logits.npy") + ": is a directory; nothing was written\n", r.err);
    assertArrayEquals(idx, read("idx.npy"), "idx.npy must be the previous run's");
    assertArrayEquals(w, read("weights.npy"), "weights.npy must be the previous run's");
    assertEquals(List.of("grad_logits.npy", "idx.npy", "tokens_per_expert.npy", "weights.npy"), names(dir.resolve("o")),
        "no temporaries left");
  }

  @Test
  void aRunWithoutGradientsRemovesTheStaleGradientFile() throws Exception {
    assertEquals(0, route(1, true).status);
    assertTrue(Files.exists(dir.resolve("o/grad_logits.npy")));
    MainTest.Run r = route(2, false);
    assertEquals(0, r.status, r.err);
    assertEquals(List.of("idx.npy", "tokens_per_expert.npy", "weights.npy"), names(dir.resolve("o")));
    MainTest.Run again = route(2, true);
    assertEquals(0, again.status, again.err);
    assertEquals(List.of("grad_logits.npy", "idx.npy", "tokens_per_expert.npy", "weights.npy"), names(dir.resolve("o")));
  }

  /** A full disk on the last file: the earlier members must not have been replaced either. */
  @Test
  void aWriteFailureOnAnyMemberLeavesEveryOldFileAndNoTemporaries() throws Exception {
    Path o = dir.resolve("o");
    Files.createDirectories(o);
    for (String n : RouteCommand.OUTPUTS) Files.writeString(o.resolve(n), "old " + n);
    for (int failing = 0; failing < 3; failing++) {
      OutputSet set = new OutputSet(o, RouteCommand.OUTPUTS);
      for (String n : RouteCommand.OUTPUTS) set.put(n, ByteBuffer.wrap(("new " + n).getBytes(StandardCharsets.UTF_8)));
      AtomicInteger opened = new AtomicInteger();
      final int f = failing;
      IOException e = assertThrows(IOException.class, () -> set.commit(ch -> opened.getAndIncrement() == f ? full(ch) : ch));
      assertEquals(o.resolve(RouteCommand.OUTPUTS[failing]) + ": cannot write: No space left on device", e.getMessage());
      for (String n : RouteCommand.OUTPUTS) assertEquals("old " + n, Files.readString(o.resolve(n)), n + " after failure " + f);
      assertEquals(Arrays.stream(RouteCommand.OUTPUTS).sorted().toList(), names(o), "no temporaries left");
    }
    OutputSet set = new OutputSet(o, RouteCommand.OUTPUTS);
    set.put("idx.npy", ByteBuffer.wrap("new".getBytes(StandardCharsets.UTF_8)));
    set.commit();
    assertEquals(List.of("idx.npy"), names(o), "the members not produced were removed");
    assertFalse(Files.readString(o.resolve("idx.npy")).startsWith("old"));
  }

  static WritableByteChannel full(WritableByteChannel ch) {
    return new WritableByteChannel() {
      @Override
      public int write(ByteBuffer src) throws IOException {
        throw new IOException("No space left on device");
      }

      @Override
      public boolean isOpen() {
        return ch.isOpen();
      }

      @Override
      public void close() throws IOException {
        ch.close();
      }
    };
  }
}
