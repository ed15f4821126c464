// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.moerouter.Backend;
import org.moerouter.MoeRouter;
import org.moerouter.NativeLibrary;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.results.Result;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.results.format.ResultFormatType;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.TimeValue;

/**
 * Runs the benchmark profile through the JMH API and prints the ns/token table ({@link ReportTable})
 * from the {@link RunResult}s directly. The raw JMH results are also written as JSON ({@code --out}).
 *
 * <p>Default (short) grid: backends JAVA and CPU (plus CUDA when a GPU is visible), all four configs,
 * T in {1, 4096}, fp32 and bf16, live and replay; backward at T=4096 fp32; the JNI overhead benchmark.
 * {@code --full}: T in {1, 64, 4096, 65536} and backward over the whole grid. CUDA is left out, with a
 * message, whenever {@link NativeLibrary#cudaDeviceCount()} is 0 (or the library has no CUDA kernels).
 *
 * <pre>
 * java -cp benchmarks/target/benchmarks.jar org.moerouter.bench.BenchMain [--full]
 *     [--out FILE.json] [--table FILE.md] [--backends JAVA,CPU,CUDA] [--configs e64k6,...]
 *     [--tokens 1,4096] [--dtypes fp32,bf16] [--no-backward] [--no-jni]
 *     [--forks 1] [--wi 2] [--w 200] [--i 3] [--r 300]   (times in ms)
 * </pre>
 */
public final class BenchMain {
  private BenchMain() {}

  private static final String PKG = "org\\.moerouter\\.bench\\.";

  public static void main(String[] args) throws IOException, RunnerException {
    Map<String, String> opt = parse(args);
    if (opt.containsKey("help")) {
      System.out.println("usage: BenchMain [--cpu-goals] [--full] [--out FILE.json] [--table FILE.md] [--backends JAVA,CPU,CUDA]"
          + " [--configs " + String.join(",", BenchInputs.CONFIGS) + "] [--tokens 1,4096] [--dtypes fp32,bf16]"
          + " [--no-backward] [--no-jni] [--forks 1] [--wi 2] [--w 200] [--i 3] [--r 300]");
      return;
    }
    if (opt.containsKey("cpu-goals")) {
      cpuGoals(opt, args);
      return;
    }
    boolean full = opt.containsKey("full");
    Path out = Paths.get(opt.getOrDefault("out", "benchmarks/target/bench-results.json"));
    Path table = Paths.get(opt.getOrDefault("table", out.toString().replaceFirst("\\.json$", "") + ".md"));

    boolean cuda = NativeLibrary.cudaDeviceCount() > 0 && MoeRouter.isAvailable(Backend.CUDA);
    List<String> backends = new ArrayList<>(list(opt.get("backends"), cuda ? "JAVA,CPU,CUDA" : "JAVA,CPU"));
    if (!NativeLibrary.loaded()) {
      System.out.println("[bench] native library not loaded (" + NativeLibrary.loadFailure() + "): CPU and CUDA skipped");
      backends.removeIf(b -> !b.equals("JAVA"));
    } else if (!cuda && backends.remove("CUDA")) {
      System.out.println("[bench] CUDA skipped: " + MoeRouter.unavailableReason(Backend.CUDA) + " (cudaDeviceCount="
          + NativeLibrary.cudaDeviceCount() + ")");
    }
    if (!cuda && !opt.containsKey("backends")) System.out.println("[bench] no GPU visible: CUDA not in the grid");
    List<String> configs = list(opt.get("configs"), String.join(",", BenchInputs.CONFIGS));
    List<String> tokens = list(opt.get("tokens"), full ? "1,64,4096,65536" : "1,4096");
    List<String> dtypes = list(opt.get("dtypes"), "fp32,bf16");
    List<String> backwardTokens = full || opt.containsKey("tokens") ? tokens : List.of("4096");
    List<String> backwardDtypes = full || opt.containsKey("dtypes") ? dtypes : List.of("fp32");

    List<ChainedOptionsBuilder> passes = new ArrayList<>();
    // An empty param list would make JMH fall back to the annotation defaults (CUDA included): skip instead.
    boolean grid = !backends.isEmpty() && !configs.isEmpty() && !tokens.isEmpty() && !dtypes.isEmpty();
    if (!grid) System.out.println("[bench] empty routing grid: routing benchmarks skipped");
    if (grid) passes.add(timing(opt).include(PKG + "RoutingBenchmark\\.(live|replay)$")
        .param("backend", arr(backends)).param("config", arr(configs)).param("tokens", arr(tokens))
        .param("dtype", arr(dtypes)));
    if (grid && !opt.containsKey("no-backward"))
      passes.add(timing(opt).include(PKG + "RoutingBenchmark\\.backward$")
          .param("backend", arr(backends)).param("config", arr(configs)).param("tokens", arr(backwardTokens))
          .param("dtype", arr(backwardDtypes)));
    if (!opt.containsKey("no-jni") && NativeLibrary.loaded())
      passes.add(timing(opt).include(PKG + "JniOverheadBenchmark\\."));

    System.out.println("[bench] grid: backends=" + backends + " configs=" + configs + " tokens=" + tokens + " dtypes="
        + dtypes + (opt.containsKey("no-backward") ? " (no backward)"
            : " backward: tokens=" + backwardTokens + " dtypes=" + backwardDtypes));

    if (out.getParent() != null) Files.createDirectories(out.getParent());
    String loadBefore = loadAverage();
    List<ReportTable.Entry> entries = new ArrayList<>();
    List<Path> parts = new ArrayList<>();
    for (int p = 0; p < passes.size(); p++) {
      Path part = Paths.get(out + ".part" + p);
      parts.add(part);
      Collection<RunResult> results = new Runner(passes.get(p).resultFormat(ResultFormatType.JSON)
          .result(part.toString()).build()).run();
      for (RunResult rr : results) entries.add(entry(rr));
    }
    mergeJson(parts, out);

    String report = ReportTable.render(entries);
    String header = "Date: " + java.time.LocalDate.now() + "\nMachine: " + cpuModel() + ", "
        + Runtime.getRuntime().availableProcessors() + " hardware threads\nJDK: " + System.getProperty("java.vm.name")
        + " " + System.getProperty("java.runtime.version") + "\nLoad average (1/5/15 min) before / after: " + loadBefore + " / " + loadAverage()
        + "\nCommand: BenchMain " + String.join(" ", args)
        + "\nScores: JMH avgt, ns per call divided by T (ns/token); ± = JMH 99.9% error / T.\n\n";
    if (table.getParent() != null) Files.createDirectories(table.getParent());
    Files.writeString(table, header + report, StandardCharsets.UTF_8);
    System.out.println();
    System.out.println(header + report);
    System.out.println("[bench] JMH JSON: " + out + "  table: " + table);
  }

  /**
   * Issue 16's goal profile: {@link CpuGoalsBenchmark} over the peer configs (T 4096 and 65536 on 1 and 2
   * threads: this library, its floor, ONNX Runtime; the Java backend at T = 4096; decode sizes T = 1 and 64
   * against the Java backend and ONNX Runtime), all in this one run, and the {@link GoalTable}.
   * {@code --configs} / {@code --tokens} narrow it (tokens below 4096 are the decode pass).
   */
  private static void cpuGoals(Map<String, String> opt, String[] args) throws IOException, RunnerException {
    Path out = Paths.get(opt.getOrDefault("out", "benchmarks/target/cpu-goals.json"));
    Path table = Paths.get(opt.getOrDefault("table", out.toString().replaceFirst("\\.json$", "") + ".md"));
    String[] configs = arr(list(opt.get("configs"), String.join(",", BenchInputs.CONFIGS)));
    List<String> tokens = list(opt.get("tokens"), "1,64,4096,65536");
    List<String> big = new ArrayList<>(), small = new ArrayList<>();
    for (String t : tokens) (Integer.parseInt(t) >= 4096 ? big : small).add(t);
    List<String> softmax = new ArrayList<>();
    for (String c : configs) if (!c.equals("e256k8g")) softmax.add(c);
    String cls = PKG + "CpuGoalsBenchmark\\.";
    List<ChainedOptionsBuilder> passes = new ArrayList<>();
    if (!big.isEmpty()) {
      passes.add(timing(opt).include(cls + "(live|replay)$").param("config", configs).param("tokens", arr(big))
          .param("threads", "1", "2").param("impl", "moe", "floor", "ort"));
      if (!softmax.isEmpty())
        passes.add(timing(opt).include(cls + "live$").param("config", arr(softmax)).param("tokens", arr(big))
            .param("threads", "1", "2").param("impl", "ortSoftmaxTopk"));
      passes.add(timing(opt).include(cls + "(live|replay)$").param("config", configs).param("tokens", big.get(0))
          .param("threads", "1").param("impl", "java"));
    }
    if (!small.isEmpty())
      passes.add(timing(opt).include(cls + "(live|replay)$").param("config", configs).param("tokens", arr(small))
          .param("threads", "1").param("impl", "moe", "java", "ort"));
    if (out.getParent() != null) Files.createDirectories(out.getParent());
    String loadBefore = loadAverage();
    List<ReportTable.Entry> entries = new ArrayList<>();
    List<Path> parts = new ArrayList<>();
    for (int p = 0; p < passes.size(); p++) {
      Path part = Paths.get(out + ".part" + p);
      parts.add(part);
      for (RunResult rr : new Runner(passes.get(p).resultFormat(ResultFormatType.JSON).result(part.toString()).build()).run())
        entries.add(entry(rr));
    }
    mergeJson(parts, out);
    String header = "Date: " + java.time.LocalDate.now() + "\nMachine: " + cpuModel() + ", "
        + Runtime.getRuntime().availableProcessors() + " hardware threads\nJDK: " + System.getProperty("java.vm.name") + " "
        + System.getProperty("java.runtime.version") + "\nLoad average (1/5/15 min) before / after: " + loadBefore + " / "
        + loadAverage() + "\nCommand: BenchMain " + String.join(" ", args)
        + "\nScores: JMH avgt, ns per call divided by T (ns/token), fp32 logits. ORT = ONNX Runtime 1.29 (the faster of its"
        + " graphs); floor = a native loop reading the same bytes and writing the outputs.\n\n";
    String report = header + GoalTable.render(entries);
    if (table.getParent() != null) Files.createDirectories(table.getParent());
    Files.writeString(table, report, StandardCharsets.UTF_8);
    System.out.println();
    System.out.println(report);
    System.out.println("[bench] JMH JSON: " + out + "  table: " + table);
  }

  static ReportTable.Entry entry(RunResult rr) {
    Map<String, String> params = new LinkedHashMap<>();
    for (String k : rr.getParams().getParamsKeys()) params.put(k, rr.getParams().getParam(k));
    Result<?> r = rr.getPrimaryResult();
    return new ReportTable.Entry(rr.getParams().getBenchmark(), params, r.getScore(), r.getScoreError(), r.getScoreUnit());
  }

  private static ChainedOptionsBuilder timing(Map<String, String> opt) {
    return new OptionsBuilder()
        .mode(Mode.AverageTime)
        .timeUnit(TimeUnit.NANOSECONDS)
        .forks(Integer.parseInt(opt.getOrDefault("forks", "1")))
        .warmupIterations(Integer.parseInt(opt.getOrDefault("wi", "2")))
        .warmupTime(TimeValue.milliseconds(Long.parseLong(opt.getOrDefault("w", "200"))))
        .measurementIterations(Integer.parseInt(opt.getOrDefault("i", "3")))
        .measurementTime(TimeValue.milliseconds(Long.parseLong(opt.getOrDefault("r", "300"))))
        .shouldFailOnError(false);
  }

  /** Concatenates the JSON arrays JMH wrote for each pass into one array. */
  static void mergeJson(List<Path> parts, Path out) throws IOException {
    List<String> bodies = new ArrayList<>();
    for (Path p : parts) {
      if (!Files.exists(p)) continue;
      String s = Files.readString(p, StandardCharsets.UTF_8).trim();
      if (s.startsWith("[") && s.endsWith("]")) s = s.substring(1, s.length() - 1).trim();
      if (!s.isEmpty()) bodies.add(s);
      Files.delete(p);
    }
    Files.writeString(out, "[\n" + String.join(",\n", bodies) + "\n]\n", StandardCharsets.UTF_8);
  }

  private static String loadAverage() {
    try {
      String[] f = Files.readString(Paths.get("/proc/loadavg")).trim().split("\\s+");
      return f[0] + " " + f[1] + " " + f[2];
    } catch (IOException | RuntimeException e) {
      return "?";
    }
  }

  private static String cpuModel() {
    try {
      for (String line : Files.readAllLines(Paths.get("/proc/cpuinfo")))
        if (line.startsWith("model name")) return line.substring(line.indexOf(':') + 1).trim();
    } catch (IOException | RuntimeException e) {
      // not Linux
    }
    return System.getProperty("os.arch");
  }

  private static Map<String, String> parse(String[] args) {
    Map<String, String> m = new LinkedHashMap<>();
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (!a.startsWith("--")) throw new IllegalArgumentException("unexpected argument " + a + " (try --help)");
      String k = a.substring(2);
      switch (k) {
        case "full":
        case "cpu-goals":
        case "no-backward":
        case "no-jni":
        case "help":
          m.put(k, "");
          break;
        case "out":
        case "table":
        case "backends":
        case "configs":
        case "tokens":
        case "dtypes":
        case "forks":
        case "wi":
        case "w":
        case "i":
        case "r":
          if (i + 1 >= args.length) throw new IllegalArgumentException(a + " needs a value");
          m.put(k, args[++i]);
          break;
        default:
          throw new IllegalArgumentException("unknown option " + a + " (try --help)");
      }
    }
    return m;
  }

  private static List<String> list(String value, String dflt) {
    List<String> l = new ArrayList<>();
    for (String s : (value == null ? dflt : value).split(",")) if (!s.isBlank()) l.add(s.trim());
    return l;
  }

  private static String[] arr(List<String> l) {
    return l.toArray(new String[0]);
  }
}
