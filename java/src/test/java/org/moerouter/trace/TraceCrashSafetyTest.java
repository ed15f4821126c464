// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import static org.junit.jupiter.api.Assertions.*;

import java.io.File;
import java.io.IOException;
import java.nio.channels.WritableByteChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A write that fails or is killed midway leaves the previous file byte-identical. */
class TraceCrashSafetyTest {
  @TempDir Path dir;

  /** Fails after {@code budget} bytes. */
  static final class FailingChannel extends PartialWriteChannel {
    private long budget;

    FailingChannel(WritableByteChannel in, long budget) {
      super(in);
      this.budget = budget;
    }

    @Override
    long limit() throws IOException {
      if (budget <= 0) throw new IOException("injected failure: disk full");
      return budget;
    }

    @Override
    void wrote(int n) {
      budget -= n;
    }
  }

  private List<Path> others(Path keep) throws IOException {
    try (Stream<Path> s = Files.list(dir)) {
      return s.filter(p -> !p.equals(keep)).collect(Collectors.toList());
    }
  }

  @Test
  void failedWriteKeepsOldFileAndRemovesTemp() throws Exception {
    Path p = dir.resolve("t.safetensors");
    RoutingTrace old = TraceTestSupport.random(1, 64, 4, new int[] {0, 1}, new int[] {100, 50});
    TraceFiles.write(old, p);
    byte[] before = Files.readAllBytes(p);
    RoutingTrace next = TraceTestSupport.random(2, 64, 4, new int[] {0, 1}, new int[] {300});
    for (long budget : new long[] {0, 5, 8, 300, 2000}) {
      IOException e = assertThrows(IOException.class, () -> TraceFiles.write(next, p, ch -> new FailingChannel(ch, budget)));
      assertEquals("injected failure: disk full", e.getMessage());
      assertArrayEquals(before, Files.readAllBytes(p), "budget " + budget);
      assertEquals(List.of(), others(p), "temporary file removed");
      assertTrue(TraceFiles.read(p).contentEquals(old));
    }
    // A failure that is not an I/O error is no different.
    assertThrows(IllegalStateException.class, () -> TraceFiles.write(next, p, ch -> {
      throw new IllegalStateException("boom");
    }));
    assertArrayEquals(before, Files.readAllBytes(p));
    assertEquals(List.of(), others(p));
    // And a successful write replaces it.
    TraceFiles.write(next, p);
    assertTrue(TraceFiles.read(p).contentEquals(next));
  }

  @Test
  void writeIntoMissingDirectoryFailsCleanly() {
    RoutingTrace t = TraceTestSupport.random(1, 8, 2, new int[] {0}, new int[] {1});
    assertThrows(IOException.class, () -> TraceFiles.write(t, dir.resolve("no/such/dir/t.safetensors")));
  }

  /**
   * The child JVM's class path: java.class.path plus where the classes it runs come from. Under
   * Surefire java.class.path has them all; under the JUnit console launcher (the GPU bundle) it is
   * only the launcher jar, and the test classes live in a class loader of their own. The child's
   * TraceTestSupport uses Jackson (test scope).
   */
  private static String childClassPath() throws Exception {
    Set<String> parts = new LinkedHashSet<>(List.of(System.getProperty("java.class.path").split(File.pathSeparator)));
    for (Class<?> c : List.of(SlowTraceWriter.class, TraceFiles.class, com.fasterxml.jackson.databind.ObjectMapper.class,
        com.fasterxml.jackson.core.JsonFactory.class, com.fasterxml.jackson.annotation.JsonProperty.class))
      parts.add(Path.of(c.getProtectionDomain().getCodeSource().getLocation().toURI()).toString());
    return String.join(File.pathSeparator, parts);
  }

  @Test
  void killedWriterLeavesOldFileIntact() throws Exception {
    Path p = dir.resolve("t.safetensors");
    RoutingTrace old = TraceTestSupport.random(1, 64, 4, new int[] {0, 1}, new int[] {100, 50});
    TraceFiles.write(old, p);
    byte[] before = Files.readAllBytes(p);
    String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
    Process child = new ProcessBuilder(java, "-cp", childClassPath(), SlowTraceWriter.class.getName(), p.toString())
        .redirectErrorStream(true).redirectOutput(dir.resolve("child.log").toFile()).start();
    try {
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
      Path tmp = null;
      while (System.nanoTime() < deadline && child.isAlive()) {
        List<Path> t = others(p).stream().filter(x -> x.getFileName().toString().startsWith(".t.safetensors.tmp-")).collect(Collectors.toList());
        if (!t.isEmpty() && Files.size(t.get(0)) > 20_000) {
          tmp = t.get(0);
          break;
        }
        Thread.sleep(10);
      }
      assertNotNull(tmp, "child never got midway: " + Files.readString(dir.resolve("child.log")));
      child.destroyForcibly();
      assertTrue(child.waitFor(30, TimeUnit.SECONDS));
      assertArrayEquals(before, Files.readAllBytes(p), "old file intact after kill -9 mid-write");
      assertTrue(TraceFiles.read(p).contentEquals(old));
      assertTrue(Files.exists(tmp), "the killed writer's partial temp file stays (never the target)");
      assertTrue(Files.size(tmp) < 8 + 1000 + 3 * 8 + 8000L * 4 * 8, "killed before completion");
    } finally {
      child.destroyForcibly();
    }
    assertFalse(new File(dir.toFile(), "t.safetensors").length() == 0);
  }
}
