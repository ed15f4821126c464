// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.TreeSet;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.moerouter.trace.Npy;

/**
 * {@code moe-router case} on every goldens_v2 case and host backend: OUT holds exactly the case's expected
 * outputs (names), each with the format's dtype family, indices, maps and counts equal, floats within 1e-5
 * norm-relative (scalars 1e-5 relative); ERROR cases write the two error files naming the expected rows.
 */
class CaseCommandTest {
  static final Path CASES = Paths.get(System.getProperty("moerouter.goldens.v2", "../java/src/test/goldens_v2"));
  static final List<String> INPUTS = List.of("config.json", "logits.npy", "bias.npy", "replay_idx.npy",
      "grad_weights.npy", "padding_mask.npy", "global_tokens_history.npy", "global_tokens_per_expert.npy",
      "global_num_tokens.npy");

  @TempDir Path tmp;

  static List<Arguments> cases() throws IOException {
    List<Arguments> out = new ArrayList<>();
    try (Stream<Path> dirs = Files.list(CASES)) {
      for (Path d : dirs.filter(x -> Files.exists(x.resolve("config.json"))).sorted().collect(Collectors.toList()))
        for (String backend : new String[] {"java", "cpu"}) out.add(Arguments.of(d.getFileName().toString(), backend));
    }
    if (out.isEmpty()) throw new IllegalStateException("no goldens_v2 case under " + CASES.toAbsolutePath());
    return out;
  }

  @ParameterizedTest(name = "{0} on {1}")
  @MethodSource("cases")
  void everyExpectedOutputIsWrittenAndMatchesTheReference(String name, String backend) throws IOException {
    Path dir = CASES.resolve(name), out = tmp.resolve("out");
    MainTest.Run r = MainTest.run("case", "--case", dir.toString(), "--backend", backend, "--out", out.toString());
    assertEquals(0, r.status, r.err);
    assertTrue(r.out.startsWith("case " + name + " on " + backend.toUpperCase() + ": wrote "), r.out);
    TreeSet<String> expected = files(dir);
    expected.removeAll(INPUTS);
    String config = Files.readString(dir.resolve("config.json"));
    if (config.contains("\"nonfinite\": \"ERROR\"")) {
      assertEquals(new TreeSet<>(List.of("live_error.txt", "replay_error.txt")), files(out), "an ERROR case writes the errors");
      for (String call : new String[] {"live", "replay"}) {
        String row = config.replaceAll("(?s).*\"expected_error_row_" + call + "\": (\\d+).*", "$1");
        String text = Files.readString(out.resolve(call + "_error.txt"), StandardCharsets.UTF_8);
        assertEquals(1, text.strip().split("\n").length, text);
        assertTrue(text.contains("non-finite logits: row " + row + ": the logit of expert "), call + ": " + text);
      }
      return;
    }
    assertEquals(expected, files(out), "OUT holds exactly the case's expected outputs");
    for (String f : expected) compare(f, Npy.read(dir.resolve(f)), Npy.read(out.resolve(f)));
  }

  static void compare(String file, Npy.Array want, Npy.Array got) {
    assertTrue(Arrays.equals(want.shape(), got.shape()), file + ": shape " + Arrays.toString(got.shape()) + ", expected "
        + Arrays.toString(want.shape()));
    switch (want.dtype()) {
      case I4:
      case U1:
        assertEquals(want.dtype(), got.dtype(), file + ": dtype");
        for (int i = 0; i < want.size(); i++)
          if (want.getLong(i) != got.getLong(i))
            fail(file + ": element " + i + ": got " + got.getLong(i) + ", expected " + want.getLong(i));
        return;
      default:
        assertTrue(got.dtype() == Npy.Dtype.F4 || got.dtype() == Npy.Dtype.F8, file + ": dtype " + got.dtype());
        double diff = 0, ref = 0;
        for (int i = 0; i < want.size(); i++) {
          double d = got.getDouble(i) - want.getDouble(i);
          diff += d * d;
          ref += want.getDouble(i) * want.getDouble(i);
        }
        double rel = Math.sqrt(diff) / Math.max(Math.sqrt(ref), 1e-30);
        if (!(rel <= 1e-5)) fail(file + ": norm-relative error " + rel + " > 1e-5");
    }
  }

  static TreeSet<String> files(Path dir) throws IOException {
    try (Stream<Path> s = Files.list(dir)) {
      return s.map(p -> p.getFileName().toString()).collect(Collectors.toCollection(TreeSet::new));
    }
  }

  /** Bad folder, bad config.json, bad or missing input: exit 1, one line, nothing written; usage: exit 2. */
  @Test
  void aCaseThatCannotRunExitsNonZeroWithOneLineAndWritesNothing() throws IOException {
    Path good = CASES.resolve("losses_padding_softmax_E32_k4_SB");
    Path out = tmp.resolve("out");
    List<String[]> broken = new ArrayList<>();
    broken.add(new String[] {"missing folder", null, null});
    broken.add(new String[] {"not JSON", "config.json", "{\"T\": 128,"});
    broken.add(new String[] {"topk above E", "config.json", Files.readString(good.resolve("config.json"))
        .replace("\"topk\": 4", "\"topk\": 40")});
    broken.add(new String[] {"unknown score", "config.json", Files.readString(good.resolve("config.json"))
        .replace("\"softmax\"", "\"tanh\"")});
    broken.add(new String[] {"negative coefficient", "config.json", Files.readString(good.resolve("config.json"))
        .replace("\"z_loss_coeff\": 0.001", "\"z_loss_coeff\": -0.001")});
    broken.add(new String[] {"missing logits", "logits.npy", null});
    broken.add(new String[] {"seq layout", "config.json", Files.readString(good.resolve("config.json"))
        .replace("\"SB\"", "\"XY\"")});
    for (String[] b : broken) {
      Path dir = tmp.resolve("case-" + b[0].replace(' ', '-'));
      if (b[1] != null) {
        copy(good, dir);
        if (b[2] == null) Files.delete(dir.resolve(b[1]));
        else Files.writeString(dir.resolve(b[1]), b[2]);
      }
      MainTest.Run r = MainTest.run("case", "--case", dir.toString(), "--backend", "java", "--out", out.toString());
      assertEquals(1, r.status, b[0] + ": " + r.out + r.err);
      assertTrue(r.err.startsWith("moe-router: error: "), b[0] + ": " + r.err);
      assertEquals(1, r.err.strip().split("\n").length, b[0] + ": one line: " + r.err);
      assertFalse(Files.exists(out), b[0] + ": nothing written");
    }
    assertEquals(2, MainTest.run("case", "--out", out.toString()).status, "--case is required");
    assertEquals(2, MainTest.run("case", "--case", good.toString()).status, "--out is required");
    assertEquals(2, MainTest.run("case", "--case", good.toString(), "--out", out.toString(), "--backend", "gpu").status);
  }

  /** OUT is replaced as a set: a second case removes what the first wrote and the second does not. */
  @Test
  void anEarlierCasesOutputsAreRemoved() throws IOException {
    Path out = tmp.resolve("out");
    assertEquals(0, MainTest.run("case", "--case", CASES.resolve("losses_padding_softmax_E32_k4_SB").toString(),
        "--backend", "cpu", "--out", out.toString()).status);
    assertTrue(Files.exists(out.resolve("seq_aux_loss.npy")));
    MainTest.Run r = MainTest.run("case", "--case", CASES.resolve("nonfinite_error_sigmoid_bias_E32_k4").toString(),
        "--backend", "cpu", "--out", out.toString());
    assertEquals(0, r.status, r.err);
    assertEquals(new TreeSet<>(List.of("live_error.txt", "replay_error.txt")), files(out));
  }

  static void copy(Path from, Path to) throws IOException {
    Files.createDirectories(to);
    try (Stream<Path> s = Files.list(from)) {
      for (Path p : s.collect(Collectors.toList())) Files.copy(p, to.resolve(p.getFileName()));
    }
  }
}
