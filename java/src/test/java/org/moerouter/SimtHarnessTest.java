// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The CUDA kernels on every machine: the SIMT harness (native/test/simt, docs/cuda-harness.md) runs
 * the unmodified kernel sources on the CPU, every CUDA thread a fiber, and moe_check compares them
 * with the CPU backend bit for bit (goldens and goldens_v2, edge inputs, a random sweep over every
 * routing option of spec sections 1-5, concurrency). Each order
 * in which fibers, blocks and streams run is a separate run: a result that depends on it is a
 * missing synchronisation. The build makes the executables (CMake option MOE_ROUTER_SIMT, on by
 * default); {@code -Dmoerouter.simt=skip} skips these tests where it was turned off.
 *
 * <p>The harness runs the kernels' operations in host arithmetic, so it cannot see the GPU's own
 * contraction or approximation: {@link #kernelsRoundLikeTheCpuWhateverTheConsumersFlags} reads the PTX.
 */
class SimtHarnessTest {
  private static final long TIMEOUT_MINUTES = 20;

  private static Path harness(String name) {
    String dir = System.getProperty("moerouter.simtDir");
    Path exe = dir == null ? null : Paths.get(dir, name);
    if (exe != null && Files.isExecutable(exe)) return exe;
    String why = "SIMT harness executable " + (exe == null ? name + " (moerouter.simtDir not set)" : exe)
        + " not found: build with -DMOE_ROUTER_SIMT=ON (the default)";
    if ("skip".equals(System.getProperty("moerouter.simt"))) Assumptions.abort(why + "; moerouter.simt=skip");
    fail(why + ", or pass -Dmoerouter.simt=skip");
    return null;
  }

  /** Runs the harness with SIMT_ORDER=order; returns its output; asserts exit status 0. */
  private static List<String> run(String order, List<String> command) throws IOException, InterruptedException {
    ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(true);
    pb.environment().put("SIMT_ORDER", order);
    Process p = pb.start();
    List<String> lines = new ArrayList<>();
    StringBuilder out = new StringBuilder();
    Thread reader = new Thread(() -> {
      try {
        for (String line : new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).split("\n")) {
          lines.add(line);
          out.append(line).append('\n');
        }
      } catch (IOException e) {
        out.append("(output unreadable: ").append(e).append(")\n");
      }
    });
    reader.start();
    if (!p.waitFor(TIMEOUT_MINUTES, TimeUnit.MINUTES)) {
      p.destroyForcibly();
      fail(command + " in order " + order + " did not finish in " + TIMEOUT_MINUTES + " minutes");
    }
    reader.join();
    // A clean build prints only problems: one summary line per run here; the whole output goes into the
    // assertion message when the run fails.
    for (String line : lines)
      if (line.startsWith("CUDA kernels: ") || line.startsWith("SIMT self-test: ") || line.startsWith("moe_bench: --tiny"))
        System.out.println("[moe-router] SIMT harness: " + line);
      else if (line.startsWith("check-ptx: "))
        System.out.println("[moe-router] " + line);
    assertEquals(0, p.exitValue(), () -> command + " in order " + order + " failed (exit " + p.exitValue()
        + "; 86 = emulator report: deadlock, invalid access or misuse):\n" + out);
    return lines;
  }

  @ParameterizedTest(name = "order {0}")
  @ValueSource(strings = {"forward", "reverse"})
  void emulatorSemanticsHold(String order) throws Exception {
    List<String> lines = run(order, List.of(harness("simt_selftest").toString()));
    assertTrue(lines.stream().anyMatch(l -> l.startsWith("SIMT self-test:") && l.contains(" 0 failures")),
        "self-test summary missing");
  }

  /**
   * scripts/check-ptx.sh: the kernels and every function of moe_routing_math.h compile to PTX with no
   * fused multiply-add and no approximate instruction under the library's flags, nvcc's defaults
   * (-fmad=true) and -use_fast_math (issue 10 part 3). Needs nvcc, which a library with CUDA kernels
   * was built with.
   */
  @Test
  void kernelsRoundLikeTheCpuWhateverTheConsumersFlags() throws Exception {
    if ("skip".equals(System.getProperty("moerouter.simt"))) Assumptions.abort("moerouter.simt=skip");
    Assumptions.assumeTrue(RouterNative.available() && RouterNative.moe_cuda_compiled() == 1,
        "the native library was built without CUDA kernels (no nvcc)");
    String root = System.getProperty("moerouter.repoRoot");
    Assumptions.assumeTrue(root != null, "moerouter.repoRoot not set");
    List<String> lines = run("-", List.of(Paths.get(root, "scripts", "check-ptx.sh").toString()));
    assertEquals(3, lines.stream().filter(l -> l.startsWith("check-ptx: ") && l.contains("no contraction")).count(),
        "one clean summary per set of flags:\n" + String.join("\n", lines));
  }

  /**
   * moe_bench --tiny on the emulated device: the benchmark's own kernels (the floors), its event timing
   * and its calls of every routing entry point run on every build, and each routed row is checked (k
   * distinct experts in range), so the program the GPU bundle runs is not dead code. Its timings mean
   * nothing here.
   */
  @Test
  void benchmarkRunsOnTheEmulatedDevice() throws Exception {
    List<String> lines = run("forward", List.of(harness("moe_bench_simt").toString(), "--tiny"));
    assertTrue(lines.stream().anyMatch(l -> l.startsWith("moe_bench: --tiny: ") && l.endsWith(" routed rows checked")),
        "summary line missing:\n" + String.join("\n", lines));
  }

  // forward, reverse and one seeded random order (-Dmoerouter.simtSeed=N picks another seed)
  @ParameterizedTest(name = "order {0}")
  @ValueSource(strings = {"forward", "reverse", "random"})
  void cudaKernelsMatchTheCpuBackendBitForBit(String order) throws Exception {
    String o = order.equals("random") ? "random:" + System.getProperty("moerouter.simtSeed", "20240611") : order;
    List<String> cmd = new ArrayList<>(List.of(harness("moe_check_simt").toString(), "--quick"));
    cmd.add("--goldens");
    cmd.add(Goldens.root().toAbsolutePath().toString());
    cmd.add("--goldens");
    cmd.add(GoldensV2.root().toAbsolutePath().toString());
    List<String> lines = run(o, cmd);
    assertTrue(lines.stream().anyMatch(l -> l.startsWith("CUDA kernels: ") && l.contains(" checks passed in order " + o)),
        "summary line missing");
    long goldens = lines.stream().filter(l -> l.startsWith("golden ") && l.endsWith(" ok")).count();
    assertEquals(Goldens.all().size() + GoldensV2.all().size(), goldens,
        "every golden case (goldens and goldens_v2) checked on the emulated device");
  }
}
