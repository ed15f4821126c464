// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;

/**
 * Turns benchmark scores (ns per call) into the profile table: ns/token for live, replay and backward,
 * replay/live and native/Java ratios, the JNI overhead line, and flags for rows that miss a target.
 * Flags never fail anything; they are there to be read.
 *
 * <p>Targets (issue #6): replay/live &lt;= 1.0 on every backend and config; native CPU at least 5x faster
 * than pure Java at T &gt;= 4096; JNI overhead at most 1 us per call.
 */
public final class ReportTable {
  private ReportTable() {}

  public static final double REPLAY_LIVE_MAX = 1.0;
  public static final double NATIVE_SPEEDUP_MIN = 5.0;
  public static final int NATIVE_SPEEDUP_MIN_TOKENS = 4096;
  public static final double JNI_OVERHEAD_MAX_NS = 1000.0;

  /**
   * One benchmark score. {@code benchmark} is "Class.method" (package optional), {@code params} the JMH
   * params, {@code score}/{@code error} in {@code unit} (ns/op, us/op, ms/op or s/op; error may be NaN).
   */
  public record Entry(String benchmark, Map<String, String> params, double score, double error, String unit) {
    public Entry {
      Objects.requireNonNull(benchmark, "benchmark");
      params = Map.copyOf(params);
    }

    String method() {
      return benchmark.substring(benchmark.lastIndexOf('.') + 1);
    }

    String className() {
      String s = benchmark.substring(0, Math.max(0, benchmark.lastIndexOf('.')));
      return s.substring(s.lastIndexOf('.') + 1);
    }

    double ns() {
      return score * nsPerUnit(unit);
    }

    double errorNs() {
      return error * nsPerUnit(unit);
    }
  }

  static double nsPerUnit(String unit) {
    switch (unit) {
      case "ns/op":
        return 1;
      case "us/op":
        return 1e3;
      case "ms/op":
        return 1e6;
      case "s/op":
        return 1e9;
      default:
        throw new IllegalArgumentException("unsupported unit " + unit + " (use -bm avgt)");
    }
  }

  /** A (backend, config, dtype, T) row with its per-token scores; NaN where not measured. */
  public static final class Row {
    public final String backend, config, dtype;
    public final int tokens;
    double live = Double.NaN, liveErr = Double.NaN;
    double replay = Double.NaN, replayErr = Double.NaN;
    double backward = Double.NaN, backwardErr = Double.NaN;
    double liveSpeedup = Double.NaN, replaySpeedup = Double.NaN; // pure-Java time / this row's time
    final List<String> flags = new ArrayList<>();

    Row(String backend, String config, String dtype, int tokens) {
      this.backend = backend;
      this.config = config;
      this.dtype = dtype;
      this.tokens = tokens;
    }

    String key() {
      return key(backend, config, dtype, tokens);
    }

    static String key(String backend, String config, String dtype, int tokens) {
      return backend + '|' + config + '|' + dtype + '|' + tokens;
    }

    public double liveNsPerToken() {
      return live;
    }

    public double replayNsPerToken() {
      return replay;
    }

    public double backwardNsPerToken() {
      return backward;
    }

    public double replayOverLive() {
      return replay / live;
    }

    public double liveSpeedupOverJava() {
      return liveSpeedup;
    }

    public double replaySpeedupOverJava() {
      return replaySpeedup;
    }

    public List<String> flags() {
      return flags;
    }
  }

  /** The computed report: rows in table order, JNI scores (ns per call, by method), summary lines. */
  public static final class Report {
    public final List<Row> rows;
    public final Map<String, Entry> jni;
    public final List<String> summary;

    Report(List<Row> rows, Map<String, Entry> jni, List<String> summary) {
      this.rows = rows;
      this.jni = jni;
      this.summary = summary;
    }

    public Row row(String backend, String config, String dtype, int tokens) {
      for (Row r : rows)
        if (r.backend.equals(backend) && r.config.equals(config) && r.dtype.equals(dtype) && r.tokens == tokens) return r;
      return null;
    }
  }

  public static Report compute(List<Entry> entries) {
    Map<String, Row> rows = new LinkedHashMap<>();
    Map<String, Entry> jni = new LinkedHashMap<>();
    for (Entry e : entries) {
      if (e.className().equals("JniOverheadBenchmark")) {
        jni.put(e.method(), e);
        continue;
      }
      if (!e.className().equals("RoutingBenchmark")) continue;
      int tokens = Integer.parseInt(e.params().get("tokens"));
      Row r = rows.computeIfAbsent(Row.key(e.params().get("backend"), e.params().get("config"), e.params().get("dtype"), tokens),
          k -> new Row(e.params().get("backend"), e.params().get("config"), e.params().get("dtype"), tokens));
      double perToken = e.ns() / tokens, errPerToken = e.errorNs() / tokens;
      switch (e.method()) {
        case "live":
          r.live = perToken;
          r.liveErr = errPerToken;
          break;
        case "replay":
          r.replay = perToken;
          r.replayErr = errPerToken;
          break;
        case "backward":
          r.backward = perToken;
          r.backwardErr = errPerToken;
          break;
        default:
          break;
      }
    }

    List<String> summary = new ArrayList<>();
    int replayRows = 0, replayBad = 0, replayBadNoise = 0, speedRows = 0, speedBad = 0;
    for (Row r : rows.values()) {
      Row java = rows.get(Row.key("JAVA", r.config, r.dtype, r.tokens));
      if (!r.backend.equals("JAVA") && java != null) {
        r.liveSpeedup = java.live / r.live;
        r.replaySpeedup = java.replay / r.replay;
      }
      if (!Double.isNaN(r.replayOverLive())) {
        replayRows++;
        if (r.replayOverLive() > REPLAY_LIVE_MAX) {
          replayBad++;
          boolean overlap = !Double.isNaN(r.replayErr) && !Double.isNaN(r.liveErr)
              && r.replay - r.replayErr <= r.live + r.liveErr;
          if (overlap) replayBadNoise++;
          r.flags.add(overlap ? "replay>live (within error)" : "replay>live");
        }
      }
      if (r.backend.equals("CPU") && r.tokens >= NATIVE_SPEEDUP_MIN_TOKENS) {
        if (java == null) {
          r.flags.add("no JAVA row: speedup unknown");
        } else if (!Double.isNaN(r.liveSpeedup) || !Double.isNaN(r.replaySpeedup)) {
          speedRows++;
          List<String> slow = new ArrayList<>();
          if (r.liveSpeedup < NATIVE_SPEEDUP_MIN) slow.add("live");
          if (r.replaySpeedup < NATIVE_SPEEDUP_MIN) slow.add("replay");
          if (!slow.isEmpty()) {
            speedBad++;
            r.flags.add("CPU<5x Java (" + String.join(", ", slow) + ")");
          }
        }
      }
    }
    summary.add(String.format(Locale.ROOT, "replay/live <= %.1f: %s", REPLAY_LIVE_MAX, replayRows == 0 ? "not measured"
        : replayBad == 0 ? "met on all " + replayRows + " rows"
            : "MISSED on " + replayBad + " of " + replayRows + " rows (" + replayBadNoise + " of them within the error bars)"));
    summary.add(String.format(Locale.ROOT, "native CPU >= %.0fx pure Java at T >= %d: %s", NATIVE_SPEEDUP_MIN,
        NATIVE_SPEEDUP_MIN_TOKENS, speedRows == 0 ? "not measured (needs JAVA and CPU rows at T >= 4096)"
            : speedBad == 0 ? "met on all " + speedRows + " rows" : "MISSED on " + speedBad + " of " + speedRows + " rows"));
    Entry empty = jni.get("emptyCall");
    summary.add(String.format(Locale.ROOT, "JNI overhead <= %.0f ns per call: %s", JNI_OVERHEAD_MAX_NS, empty == null
        ? "not measured"
        : (empty.ns() <= JNI_OVERHEAD_MAX_NS ? "met" : "MISSED") + String.format(Locale.ROOT, " (empty call %s ns)", fmt(empty.ns()))));

    List<Row> sorted = new ArrayList<>(rows.values());
    sorted.sort(Comparator.<Row>comparingInt(r -> order(BenchInputs.CONFIGS, r.config))
        .thenComparing(r -> r.config)
        .thenComparingInt(r -> order(new String[] {"fp32", "bf16"}, r.dtype))
        .thenComparingInt(r -> r.tokens)
        .thenComparingInt(r -> order(new String[] {"JAVA", "CPU", "CUDA"}, r.backend)));
    return new Report(sorted, jni, summary);
  }

  private static int order(String[] known, String value) {
    int i = Arrays.asList(known).indexOf(value);
    return i < 0 ? known.length : i;
  }

  /** The report as Markdown: the table, the JNI line, the target summary. */
  public static String render(List<Entry> entries) {
    return render(compute(entries));
  }

  public static String render(Report report) {
    StringBuilder s = new StringBuilder();
    if (!report.rows.isEmpty()) {
      boolean withBackward = report.rows.stream().anyMatch(r -> !Double.isNaN(r.backward));
      s.append("| backend | config | dtype | T | live ns/token | replay ns/token | replay/live | native/Java live, replay |");
      if (withBackward) s.append(" backward ns/token |");
      s.append(" flags |\n");
      s.append("|---|---|---|---:|---:|---:|---:|---:|");
      if (withBackward) s.append("---:|");
      s.append("---|\n");
      for (Row r : report.rows) {
        s.append("| ").append(r.backend).append(" | ").append(r.config).append(" | ").append(r.dtype).append(" | ")
            .append(r.tokens).append(" | ").append(withError(r.live, r.liveErr)).append(" | ")
            .append(withError(r.replay, r.replayErr)).append(" | ").append(ratio(r.replayOverLive())).append(" | ")
            .append(r.backend.equals("JAVA") ? "-" : speedup(r.liveSpeedup) + ", " + speedup(r.replaySpeedup))
            .append(" |");
        if (withBackward) s.append(' ').append(withError(r.backward, r.backwardErr)).append(" |");
        s.append(' ').append(r.flags.isEmpty() ? "" : "**" + String.join("; ", r.flags) + "**").append(" |\n");
      }
      s.append('\n');
    }
    if (!report.jni.isEmpty()) {
      s.append("JNI overhead (ns per call, ").append(jniConfig(report.jni)).append("): ");
      List<String> parts = new ArrayList<>();
      jniPart(parts, report.jni, "emptyCall", "empty call");
      jniPart(parts, report.jni, "cpuRouteT0", "route T=0 CPU");
      jniPart(parts, report.jni, "javaRouteT0", "route T=0 Java");
      jniPart(parts, report.jni, "cpuRouteT1", "route T=1 CPU");
      jniPart(parts, report.jni, "javaRouteT1", "route T=1 Java");
      jniPart(parts, report.jni, "cpuBufferRouteT0", "direct-buffer route T=0 CPU");
      jniPart(parts, report.jni, "cpuBufferRouteT1", "direct-buffer route T=1 CPU");
      s.append(String.join("; ", parts));
      Entry empty = report.jni.get("emptyCall");
      if (empty != null && empty.ns() > JNI_OVERHEAD_MAX_NS) s.append(" **empty call > 1 us**");
      Entry t0 = report.jni.get("cpuRouteT0");
      if (t0 != null && t0.ns() > JNI_OVERHEAD_MAX_NS) s.append(" **route T=0 on CPU > 1 us**");
      s.append("\n\n");
    }
    s.append("Targets:\n");
    for (String line : report.summary) s.append("- ").append(line).append('\n');
    return s.toString();
  }

  private static String jniConfig(Map<String, Entry> jni) {
    String c = jni.values().iterator().next().params().get("config");
    return c == null ? "?" : c;
  }

  private static void jniPart(List<String> parts, Map<String, Entry> jni, String method, String label) {
    Entry e = jni.get(method);
    if (e != null) parts.add(label + " " + withError(e.ns(), e.errorNs()));
  }

  static String fmt(double v) {
    if (Double.isNaN(v)) return "-";
    double a = Math.abs(v);
    return String.format(Locale.ROOT, a >= 100 ? "%.0f" : a >= 10 ? "%.1f" : "%.2f", v);
  }

  static String withError(double v, double err) {
    if (Double.isNaN(v)) return "-";
    return Double.isNaN(err) || Double.isInfinite(err) ? fmt(v) : fmt(v) + " ±" + fmt(err);
  }

  static String ratio(double v) {
    return Double.isNaN(v) ? "-" : String.format(Locale.ROOT, "%.2f", v);
  }

  static String speedup(double v) {
    return Double.isNaN(v) ? "-" : String.format(Locale.ROOT, "%.1fx", v);
  }
}
