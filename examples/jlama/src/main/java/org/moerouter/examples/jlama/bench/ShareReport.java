// SPDX-License-Identifier: Apache-2.0
package org.moerouter.examples.jlama.bench;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.openjdk.jmh.results.Result;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.results.format.ResultFormatType;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.TimeValue;

/**
 * Runs {@link MoeLayerRoutingBenchmark} and {@link JlamaMoEBlockBenchmark} and prints the routing-share
 * table of docs/benchmarks.md ("jlama"): per layer shape and T, the routing step and the whole layer with
 * jlama's routing and with moe-router (live, replay), the share of the layer spent routing, replay/live.
 *
 * <pre>
 *   examples/jlama/run.sh bench [--out FILE.json] [--shapes MIXTRAL,E64K8] [--tokens 1,512] [--wi 5] [--i 7]
 * </pre>
 */
public final class ShareReport {
  private ShareReport() {}

  public static void main(String[] args) throws RunnerException, IOException {
    String out = "examples/jlama/target/jlama-bench.json", shapes = "MIXTRAL,E64K8", tokens = "1,512";
    int wi = 5, i = 7;
    for (int a = 0; a < args.length; a++) {
      String v = a + 1 < args.length ? args[a + 1] : null;
      if (v == null) throw new IllegalArgumentException(args[a] + " needs a value");
      switch (args[a++]) {
        case "--out": out = v; break;
        case "--shapes": shapes = v; break;
        case "--tokens": tokens = v; break;
        case "--wi": wi = Integer.parseInt(v); break;
        case "--i": i = Integer.parseInt(v); break;
        default: throw new IllegalArgumentException("unknown option " + args[a - 1] + " (--out, --shapes, --tokens, --wi, --i)");
      }
    }
    Path json = Path.of(out);
    if (json.getParent() != null) Files.createDirectories(json.getParent());
    ChainedOptionsBuilder o = new OptionsBuilder()
        .include(MoeLayerRoutingBenchmark.class.getName())
        .include(JlamaMoEBlockBenchmark.class.getName())
        .param("shape", shapes.split(","))
        .param("tokens", tokens.split(","))
        .warmupIterations(wi).warmupTime(TimeValue.seconds(1))
        .measurementIterations(i).measurementTime(TimeValue.seconds(1))
        .forks(1)
        .resultFormat(ResultFormatType.JSON).result(json.toString());
    Collection<RunResult> results = new Runner(o.build()).run();
    System.out.println();
    System.out.println(table(results));
    System.out.println("JMH JSON: " + json);
  }

  /**
   * The markdown table: microseconds per call (avgt, one fork), the median of the measurement iterations
   * with their range, because a shared machine makes single iterations spike; shares and ratios are of
   * medians.
   */
  static String table(Collection<RunResult> results) {
    Map<String, Result> byKey = new LinkedHashMap<>();
    List<String> rows = new ArrayList<>();
    for (RunResult r : results) {
      String method = r.getParams().getBenchmark();
      method = method.substring(method.lastIndexOf('.') + 1);
      String routing = r.getParams().getParam("routing");
      String row = r.getParams().getParam("shape") + "|" + r.getParams().getParam("tokens");
      if (!rows.contains(row)) rows.add(row);
      byKey.put(row + "|" + method + "|" + (routing == null ? "" : routing), r.getPrimaryResult());
    }
    StringBuilder s = new StringBuilder();
    s.append("| layer | T | gate matmul us | routing | route us | layer us | routing share | replay/live route | replay/live layer | jlama MoEBlock us |\n");
    s.append("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
    for (String row : rows) {
      String[] p = row.split("\\|");
      for (String routing : new String[] {"jlama", "live", "replay"}) {
        Result route = byKey.get(row + "|route|" + routing), layer = byKey.get(row + "|layer|" + routing);
        if (route == null || layer == null) continue;
        boolean first = routing.equals("jlama");
        s.append("| ").append(first ? p[0] : "").append(" | ").append(first ? p[1] : "").append(" | ")
            .append(first ? us(byKey.get(row + "|gate|")) : "").append(" | ").append(routing).append(" | ")
            .append(us(route)).append(" | ").append(us(layer)).append(" | ")
            .append(String.format(Locale.ROOT, "%.3f%%", 100 * median(route) / median(layer))).append(" | ");
        if (routing.equals("replay")) {
          s.append(ratio(route, byKey.get(row + "|route|live"))).append(" | ").append(ratio(layer, byKey.get(row + "|layer|live")));
        } else {
          s.append(" | ");
        }
        s.append(" | ").append(first ? us(byKey.get(row + "|moeBlock|")) : "").append(" |\n");
      }
    }
    return s.toString();
  }

  private static double median(Result r) {
    return r.getStatistics().getPercentile(50);
  }

  private static String us(Result r) {
    if (r == null) return "-";
    double v = median(r);
    return num(v) + " (" + num(r.getStatistics().getMin()) + "–" + num(r.getStatistics().getMax()) + ")";
  }

  private static String num(double v) {
    return String.format(Locale.ROOT, v >= 100 ? "%.0f" : v >= 10 ? "%.1f" : "%.2f", v);
  }

  private static String ratio(Result a, Result b) {
    return b == null ? "-" : String.format(Locale.ROOT, "%.2f", median(a) / median(b));
  }
}
