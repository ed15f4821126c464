// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.Backend;
import org.moerouter.MoeRouter;
import org.moerouter.RouterConfig;
import org.moerouter.RoutingResult;
import org.moerouter.ScoreFunction;
import org.moerouter.trace.Npy;

class MainTest {
  @TempDir Path dir;

  public static final class Run {
    int status;
    String out, err;
  }

  public static Run run(String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
    Run r = new Run();
    r.status = Main.run(args, new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
    r.out = out.toString(StandardCharsets.UTF_8);
    r.err = err.toString(StandardCharsets.UTF_8);
    return r;
  }

  float[] writeLogits(Path p, int t, int e) throws Exception {
    SplittableRandom rnd = new SplittableRandom(1);
    float[] l = new float[t * e];
    for (int i = 0; i < l.length; i++) l[i] = (float) rnd.nextGaussian();
    Npy.write(p, l, t, e);
    return l;
  }

  @Test
  void routeWritesIndicesWeightsAndGradientsMatchingTheApi() throws Exception {
    int t = 37, e = 32, k = 4;
    float[] l = writeLogits(dir.resolve("l.npy"), t, e);
    float[] bias = new float[e];
    bias[5] = 0.3f;
    Npy.write(dir.resolve("b.npy"), bias, e);
    float[] dw = new float[t * k];
    Arrays.fill(dw, 0.25f);
    Npy.write(dir.resolve("dw.npy"), dw, t, k);
    Run r = run("route", "--logits", dir.resolve("l.npy").toString(), "--bias", dir.resolve("b.npy").toString(),
        "--score", "sigmoid", "--topk", "4", "--groups", "4", "--group-topk", "2", "--scale", "2.5",
        "--grad-weights", dir.resolve("dw.npy").toString(), "--backend", "cpu", "--out", dir.resolve("o").toString());
    assertEquals(0, r.status, r.err);
    RouterConfig c = RouterConfig.builder(e, k).scoreFunction(ScoreFunction.SIGMOID).expertBias(bias).groups(4, 2)
        .scale(2.5f).build();
    try (MoeRouter router = MoeRouter.create(c, Backend.JAVA)) {
      RoutingResult ref = router.route(l, t);
      Npy.Array idx = Npy.read(dir.resolve("o/idx.npy"));
      assertArrayEquals(new long[] {t, k}, idx.shape());
      assertEquals(Npy.Dtype.I4, idx.dtype());
      assertArrayEquals(ref.indices(), idx.toIntArray());
      assertArrayEquals(ref.weights(), Npy.read(dir.resolve("o/weights.npy")).toFloatArray(), 1e-6f);
      float[] grad = new float[t * e];
      router.backward(l, t, ref.indices(), dw, grad);
      Npy.Array g = Npy.read(dir.resolve("o/grad_logits.npy"));
      assertArrayEquals(new long[] {t, e}, g.shape());
      assertArrayEquals(grad, g.toFloatArray(), 1e-6f);

      // Replay the written indices with a mask from another invocation: same weights.
      byte[] mask = new byte[t];
      Arrays.fill(mask, (byte) 1);
      Npy.write(dir.resolve("m.npy"), new Npy.Array(Npy.Dtype.U1, new long[] {t}, mask));
      Run rep = run("route", "--logits", dir.resolve("l.npy").toString(), "--bias", dir.resolve("b.npy").toString(),
          "--score", "sigmoid", "--topk", "4", "--groups", "4", "--group-topk", "2", "--scale", "2.5", "--replay",
          dir.resolve("o/idx.npy").toString(), "--replay-mask", dir.resolve("m.npy").toString(), "--backend", "java",
          "--out", dir.resolve("o2").toString());
      assertEquals(0, rep.status, rep.err);
      assertTrue(rep.out.contains("replayed"), rep.out);
      assertArrayEquals(ref.weights(), Npy.read(dir.resolve("o2/weights.npy")).toFloatArray(), 0f);
    }
  }

  @Test
  void float64LogitsAreConverted() throws Exception {
    double[] l = new double[3 * 8];
    for (int i = 0; i < l.length; i++) l[i] = Math.sin(i);
    Npy.write(dir.resolve("l64.npy"), new Npy.Array(Npy.Dtype.F8, new long[] {3, 8}, l));
    Run r = run("route", "--logits", dir.resolve("l64.npy").toString(), "--score", "softmax", "--topk", "2",
        "--out", dir.resolve("o").toString());
    assertEquals(0, r.status, r.err);
    // The same routing as the API on the logits rounded to float (the CLI's conversion), checked on values.
    float[] f = new float[l.length];
    for (int i = 0; i < l.length; i++) f[i] = (float) l[i];
    try (MoeRouter router = MoeRouter.create(RouterConfig.builder(8, 2).build(), Backend.JAVA)) {
      RoutingResult ref = router.route(f, 3);
      Npy.Array idx = Npy.read(dir.resolve("o/idx.npy"));
      assertArrayEquals(new long[] {3, 2}, idx.shape());
      assertArrayEquals(ref.indices(), idx.toIntArray());
      assertArrayEquals(ref.weights(), Npy.read(dir.resolve("o/weights.npy")).toFloatArray(), 1e-6f);
      // sin(i) for i = 0..23: row 0's largest two are sin(2) > sin(1) (experts 2, 1).
      assertArrayEquals(new int[] {2, 1}, Arrays.copyOf(idx.toIntArray(), 2));
    }
  }

  @Test
  void badInputGivesOneLineErrorsAndNonZeroExit() throws Exception {
    writeLogits(dir.resolve("l.npy"), 10, 16);
    byte[] good = Files.readAllBytes(dir.resolve("l.npy"));
    Files.write(dir.resolve("trunc.npy"), Arrays.copyOf(good, good.length - 7));
    Files.write(dir.resolve("garbage.npy"), "not a numpy file".getBytes(StandardCharsets.US_ASCII));
    Npy.write(dir.resolve("ints.npy"), new int[10 * 16], 10, 16);
    Npy.write(dir.resolve("3d.npy"), new float[2 * 5 * 16], 2, 5, 16);
    Npy.write(dir.resolve("badidx.npy"), new int[10 * 2], 10, 2);  // rows of duplicates (0, 0)
    Npy.write(dir.resolve("shortidx.npy"), new int[9 * 2], 9, 2);
    String l = dir.resolve("l.npy").toString(), o = dir.resolve("o").toString();
    String[][] cases = {
        {"route", "--logits", dir.resolve("missing.npy").toString(), "--score", "softmax", "--topk", "2", "--out", o},
        {"route", "--logits", dir.resolve("trunc.npy").toString(), "--score", "softmax", "--topk", "2", "--out", o},
        {"route", "--logits", dir.resolve("garbage.npy").toString(), "--score", "softmax", "--topk", "2", "--out", o},
        {"route", "--logits", dir.resolve("ints.npy").toString(), "--score", "softmax", "--topk", "2", "--out", o},
        {"route", "--logits", dir.resolve("3d.npy").toString(), "--score", "softmax", "--topk", "2", "--out", o},
        {"route", "--logits", l, "--score", "softmax", "--topk", "17", "--out", o},
        {"route", "--logits", l, "--score", "softmax", "--topk", "2", "--replay", dir.resolve("badidx.npy").toString(), "--out", o},
        {"route", "--logits", l, "--score", "softmax", "--topk", "2", "--replay", dir.resolve("shortidx.npy").toString(), "--out", o},
        {"route", "--logits", l, "--score", "softmax", "--topk", "2", "--groups", "3", "--group-topk", "1", "--out", o},
    };
    for (String[] c : cases) {
      Run r = run(c);
      assertEquals(1, r.status, String.join(" ", c) + " -> " + r.err);
      assertTrue(r.err.startsWith("moe-router: error: "), r.err);
      assertEquals(1, r.err.strip().split("\n").length, "one line: " + r.err);
      assertFalse(r.err.contains("\tat "), "no stack trace: " + r.err);
    }
    assertFalse(Files.exists(dir.resolve("o/idx.npy")), "nothing written for a failed run");
    Run usage = run("route", "--logits", l, "--score", "softmax", "--out", o);
    assertEquals(2, usage.status);
    assertTrue(usage.err.contains("--topk"), usage.err);
    assertEquals(2, run("route", "--logits", l, "--score", "tanh", "--topk", "2", "--out", o).status);
    assertEquals(2, run("frobnicate").status);
    assertEquals(2, run("route", "--nope").status);
  }

  @Test
  void demoRunsAndReplayRemovesEveryMismatch() {
    Run r = run("demo", "--layers", "3", "--tokens", "512", "--hidden", "64", "--backend", "cpu", "--out",
        dir.resolve("demo").toString());
    assertEquals(0, r.status, r.err + r.out);
    assertTrue(r.out.contains("0.00% with replay"), r.out);
    assertTrue(Files.exists(dir.resolve("demo/r3-trace.safetensors")));
    Run inspect = run("trace", "inspect", dir.resolve("demo/r3-trace.safetensors").toString());
    assertEquals(0, inspect.status, inspect.err);
  }

  @Test
  void infoListsBackends() {
    Run r = run("info");
    assertEquals(0, r.status);
    assertTrue(r.out.contains("CPU: available"), r.out);
  }

  @Test
  void routeReplaysMinusOneRowsAsTheOptionSays() throws Exception {
    float[] l = writeLogits(dir.resolve("l.npy"), 4, 16);
    long[] idx = {3, 5, -1, -1, 7, 1, 2, 9};
    Npy.write(dir.resolve("r.npy"), new Npy.Array(Npy.Dtype.I8, new long[] {4, 2}, idx));
    String[] base = {"route", "--logits", dir.resolve("l.npy").toString(), "--score", "softmax", "--topk", "2", "--backend", "java",
        "--replay", dir.resolve("r.npy").toString(), "--out", dir.resolve("o").toString()};
    Run rejected = run(base);
    assertEquals(1, rejected.status);
    assertEquals("moe-router: error: decoder layer 0: target row 1 is all -1 (padding), rejected under minus_one_rows REJECT"
        + " (use LIVE to route it live or ARANGE to replay experts 0..k-1)", rejected.err.strip());
    int[] live;
    try (MoeRouter router = MoeRouter.create(RouterConfig.builder(16, 2).build(), Backend.JAVA)) {
      live = router.route(l, 4).indices();
    }
    for (String policy : new String[] {"live", "arange"}) {
      String[] args = Arrays.copyOf(base, base.length + 2);
      args[base.length] = "--minus-one-rows";
      args[base.length + 1] = policy;
      Run r = run(args);
      assertEquals(0, r.status, r.err);
      int[] got = Npy.read(dir.resolve("o/idx.npy")).toIntArray();
      int[] want = {3, 5, 0, 0, 7, 1, 2, 9};
      if (policy.equals("live")) {
        want[2] = live[2];
        want[3] = live[3];
      } else {
        want[2] = 0;
        want[3] = 1;
      }
      assertArrayEquals(want, got, policy);
    }
    Npy.write(dir.resolve("big.npy"), new Npy.Array(Npy.Dtype.I8, new long[] {4, 2}, new long[] {3, 5, 4294967299L, 1, 7, 1, 2, 9}));
    base[10] = dir.resolve("big.npy").toString();
    Run big = run(base);
    assertEquals(1, big.status);
    assertTrue(big.err.contains("replay index 4294967299 at row 1 position 0 is not an expert index"), big.err);
    assertEquals(2, run("route", "--logits", dir.resolve("l.npy").toString(), "--score", "softmax", "--topk", "2",
        "--minus-one-rows", "live", "--out", dir.resolve("o").toString()).status, "--minus-one-rows needs --replay");
  }
}
