// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeSet;

/**
 * The issue-16 goal table from {@link CpuGoalsBenchmark} scores (one JMH run): ns/token of this library's
 * CPU backend ({@code moe}), its memory floor, ONNX Runtime (the faster of its graphs) and the pure-Java
 * backend, with the ratios the goals are stated in, then one line per goal saying met or missed.
 */
public final class GoalTable {
  private GoalTable() {}

  public static final double SOFTMAX_POST_FLOOR_MAX = 3.0;
  public static final double LIVE_VS_ORT_MIN = 3.0;
  public static final double REPLAY_VS_ORT_MIN = 1.5;
  public static final double VS_JAVA_MIN = 5.0;
  public static final double REPLAY_FLOOR_MAX = 1.5;
  public static final double TWO_THREADS_MIN = 1.8;

  /** ns/token by key "config|T|threads|impl|call"; ortSoftmaxTopk folds into ort (the faster one counts). */
  static Map<String, Double> scores(List<ReportTable.Entry> entries) {
    Map<String, Double> m = new LinkedHashMap<>();
    for (ReportTable.Entry e : entries) {
      if (!e.className().equals("CpuGoalsBenchmark")) continue;
      Map<String, String> p = e.params();
      int tokens = Integer.parseInt(p.get("tokens"));
      String impl = p.get("impl").equals("ortSoftmaxTopk") ? "ort" : p.get("impl");
      String key = p.get("config") + "|" + tokens + "|" + p.get("threads") + "|" + impl + "|" + e.method();
      double v = e.ns() / Math.max(1, tokens);
      m.merge(key, v, Math::min);
    }
    return m;
  }

  public static String render(List<ReportTable.Entry> entries) {
    Map<String, Double> s = scores(entries);
    if (s.isEmpty()) return "";
    TreeSet<Integer> tokens = new TreeSet<>();
    List<String> configs = new ArrayList<>();
    for (String k : s.keySet()) {
      String[] f = k.split("\\|");
      tokens.add(Integer.parseInt(f[1]));
      if (!configs.contains(f[0])) configs.add(f[0]);
    }
    configs.sort((a, b) -> Integer.compare(List.of(BenchInputs.CONFIGS).indexOf(a), List.of(BenchInputs.CONFIGS).indexOf(b)));
    StringBuilder out = new StringBuilder();
    out.append("| config | T | call | thr | moe ns/tok | floor | moe/floor | ORT | ORT/moe | Java | Java/moe | 2T/1T speedup | replay/live |\n");
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    List<String> goals = new ArrayList<>();
    for (String c : configs)
      for (int t : tokens)
        for (String call : new String[] {"live", "replay"})
          for (String thr : new String[] {"1", "2"}) {
            double moe = get(s, c, t, thr, "moe", call);
            if (Double.isNaN(moe)) continue;
            double floor = get(s, c, t, thr, "floor", call), ort = get(s, c, t, thr, "ort", call);
            double java = get(s, c, t, "1", "java", call);
            double one = get(s, c, t, "1", "moe", call), live = get(s, c, t, thr, "moe", "live");
            out.append(String.format(Locale.ROOT, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c, t,
                call, thr, num(moe), num(floor), ratio(moe / floor), num(ort), ratio(ort / moe), num(java),
                ratio(java / moe), thr.equals("2") ? ratio(one / moe) : "", call.equals("replay") ? ratio(moe / live) : ""));
          }
    // Goals, each with the rows it covers.
    for (String c : configs) {
      boolean softmaxPost = !c.equals("e256k8g");
      for (int t : tokens) {
        for (String thr : new String[] {"1", "2"}) {
          double live = get(s, c, t, thr, "moe", "live"), replay = get(s, c, t, thr, "moe", "replay");
          if (softmaxPost && thr.equals("1") && t >= 65536)
            goal(goals, c + " T=" + t + ": softmax post live <= " + SOFTMAX_POST_FLOOR_MAX + "x the 1-thread floor",
                live / get(s, c, t, "1", "floor", "live"), SOFTMAX_POST_FLOOR_MAX, true);
          if (t >= 4096) {
            goal(goals, c + " T=" + t + " " + thr + "T: live >= " + LIVE_VS_ORT_MIN + "x faster than ONNX Runtime",
                get(s, c, t, thr, "ort", "live") / live, LIVE_VS_ORT_MIN, false);
            goal(goals, c + " T=" + t + " " + thr + "T: replay >= " + REPLAY_VS_ORT_MIN + "x faster than ONNX Runtime (gather first)",
                get(s, c, t, thr, "ort", "replay") / replay, REPLAY_VS_ORT_MIN, false);
            goal(goals, c + " T=" + t + " " + thr + "T: replay <= " + REPLAY_FLOOR_MAX + "x its floor",
                replay / get(s, c, t, thr, "floor", "replay"), REPLAY_FLOOR_MAX, true);
            goal(goals, c + " T=" + t + " " + thr + "T: replay <= live", replay / live, 1.0, true);
            if (thr.equals("1")) {
              goal(goals, c + " T=" + t + ": live >= " + VS_JAVA_MIN + "x faster than the Java backend",
                  get(s, c, t, "1", "java", "live") / live, VS_JAVA_MIN, false);
              goal(goals, c + " T=" + t + ": replay >= " + VS_JAVA_MIN + "x faster than the Java backend",
                  get(s, c, t, "1", "java", "replay") / replay, VS_JAVA_MIN, false);
            } else {
              for (String call : new String[] {"live", "replay"})
                goal(goals, c + " T=" + t + ": " + call + " on 2 threads >= " + TWO_THREADS_MIN + "x 1 thread",
                    get(s, c, t, "1", "moe", call) / get(s, c, t, "2", "moe", call), TWO_THREADS_MIN, false);
            }
          } else if (thr.equals("1")) {
            for (String call : new String[] {"live", "replay"})
              goal(goals, c + " T=" + t + ": decode-size " + call + " no slower than the Java backend",
                  get(s, c, t, "1", "moe", call) / get(s, c, t, "1", "java", call), 1.0, true);
          }
        }
      }
    }
    out.append("\nGoals (issue 16):\n");
    long met = goals.stream().filter(g -> g.startsWith("- met")).count();
    for (String g : goals) out.append(g).append('\n');
    out.append(String.format(Locale.ROOT, "%d of %d goal rows met\n", met, goals.size()));
    return out.toString();
  }

  private static void goal(List<String> goals, String what, double value, double bound, boolean atMost) {
    if (Double.isNaN(value)) return;
    boolean ok = atMost ? value <= bound : value >= bound;
    goals.add(String.format(Locale.ROOT, "- %s: %s (%.2fx)", ok ? "met" : "MISSED", what, value));
  }

  private static double get(Map<String, Double> s, String c, int t, String thr, String impl, String call) {
    return s.getOrDefault(c + "|" + t + "|" + thr + "|" + impl + "|" + call, Double.NaN);
  }

  private static String num(double v) {
    if (Double.isNaN(v)) return "-";
    return v >= 100 ? String.format(Locale.ROOT, "%.0f", v) : String.format(Locale.ROOT, "%.1f", v);
  }

  private static String ratio(double v) {
    return Double.isNaN(v) || Double.isInfinite(v) ? "-" : String.format(Locale.ROOT, "%.2f", v);
  }
}
