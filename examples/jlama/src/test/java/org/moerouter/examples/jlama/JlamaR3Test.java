// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.trace.RoutingTrace;
import org.moerouter.trace.TraceFiles;

/** The command-line example: the README's command on a checkpoint given with --model, and its argument errors. */
class JlamaR3Test {
  @Test
  void runsR3OnACheckpointDirectoryAndWritesTheTrace(@TempDir Path tmp) throws IOException {
    Path trace = tmp.resolve("t.safetensors");
    ByteArrayOutputStream buf = new ByteArrayOutputStream();
    int status = JlamaR3.run(new String[] {"--model", TinyModels.r3().toString(), "--new-tokens", "12", "--trace", trace.toString(),
        "--backend", "cpu"}, new PrintStream(buf, true, StandardCharsets.UTF_8));
    String out = buf.toString(StandardCharsets.UTF_8);
    assertEquals(0, status, out);
    assertTrue(out.contains("with replay:    0 rows differ; experts and their order equal the recording"), out);
    assertTrue(out.contains("moe-router CPU"), out);
    RoutingTrace t = TraceFiles.read(trace);
    assertEquals(8, t.layers());
    assertTrue(out.contains("[" + t.totalTokens() + " tokens, 8 layers, k=2]"), out);
  }

  @Test
  void rejectsBadArgumentsWithTheOptionInTheMessage(@TempDir Path tmp) {
    PrintStream sink = new PrintStream(new ByteArrayOutputStream(), true, StandardCharsets.UTF_8);
    assertTrue(assertThrows(IllegalArgumentException.class, () -> JlamaR3.run(new String[] {"--new-tokens", "0"}, sink))
        .getMessage().contains("--new-tokens must be a positive integer, got 0"));
    assertTrue(assertThrows(IllegalArgumentException.class, () -> JlamaR3.run(new String[] {"--rollout-precision", "q2"}, sink))
        .getMessage().contains("--rollout-precision must be checkpoint or fp32, got q2"));
    assertTrue(assertThrows(IllegalArgumentException.class, () -> JlamaR3.run(new String[] {"--frobnicate", "1"}, sink))
        .getMessage().contains("unknown option --frobnicate"));
    assertTrue(assertThrows(IllegalArgumentException.class, () -> JlamaR3.run(new String[] {"--model", tmp.toString()}, sink))
        .getMessage().contains("holds no config.json"));
  }
}
