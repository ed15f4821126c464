// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class ReportTableTest {
  private static final String RB = "org.moerouter.bench.RoutingBenchmark.";
  private static final String JB = "org.moerouter.bench.JniOverheadBenchmark.";

  private static ReportTable.Entry routing(String method, String backend, int tokens, double nsPerCall, double err) {
    return new ReportTable.Entry(RB + method,
        Map.of("backend", backend, "config", "e64k6", "dtype", "fp32", "tokens", Integer.toString(tokens)),
        nsPerCall, err, "ns/op");
  }

  private static List<ReportTable.Entry> synthetic() {
    List<ReportTable.Entry> l = new ArrayList<>();
    l.add(routing("live", "JAVA", 4096, 4096 * 100.0, 4096 * 1.0));
    l.add(routing("replay", "JAVA", 4096, 4096 * 40.0, 4096 * 1.0));
    l.add(routing("live", "CPU", 4096, 4096 * 10.0, 4096 * 0.2)); // 10x
    l.add(routing("replay", "CPU", 4096, 4096 * 10.5, 4096 * 0.1)); // 3.8x, replay > live beyond error
    l.add(routing("backward", "CPU", 4096, 4096 * 20.0, Double.NaN));
    l.add(routing("live", "CPU", 1, 300, 50)); // T=1: no speedup target
    l.add(routing("replay", "CPU", 1, 310, 50)); // replay > live within error
    l.add(new ReportTable.Entry(JB + "emptyCall", Map.of("config", "e64k6"), 0.015, 0.001, "us/op"));
    l.add(new ReportTable.Entry(JB + "cpuRouteT0", Map.of("config", "e64k6"), 2000, 10, "ns/op"));
    return l;
  }

  @Test
  void computesPerTokenScoresRatiosAndFlags() {
    ReportTable.Report r = ReportTable.compute(synthetic());
    ReportTable.Row cpu = r.row("CPU", "e64k6", "fp32", 4096);
    assertNotNull(cpu);
    assertEquals(10.0, cpu.liveNsPerToken(), 1e-9);
    assertEquals(1.05, cpu.replayOverLive(), 1e-9);
    assertEquals(10.0, cpu.liveSpeedupOverJava(), 1e-9);
    assertEquals(40.0 / 10.5, cpu.replaySpeedupOverJava(), 1e-9);
    assertEquals(20.0, cpu.backwardNsPerToken(), 1e-9);
    assertEquals(List.of("replay>live", "CPU<5x Java (replay)"), cpu.flags());

    ReportTable.Row java = r.row("JAVA", "e64k6", "fp32", 4096);
    assertEquals(0.4, java.replayOverLive(), 1e-9);
    assertTrue(java.flags().isEmpty());

    ReportTable.Row t1 = r.row("CPU", "e64k6", "fp32", 1);
    assertEquals(List.of("replay>live (within error)"), t1.flags());

    // table order: T ascending, then JAVA before CPU
    assertEquals(List.of("CPU|1", "JAVA|4096", "CPU|4096"),
        r.rows.stream().map(x -> x.backend + "|" + x.tokens).toList());

    assertTrue(r.summary.get(0).contains("MISSED on 2 of 3 rows (1 of them within the error bars)"), r.summary.get(0));
    assertTrue(r.summary.get(1).contains("MISSED on 1 of 1 rows"), r.summary.get(1));
    assertTrue(r.summary.get(2).contains("met (empty call 15.0 ns)"), r.summary.get(2));
  }

  @Test
  void rendersMarkdown() {
    String md = ReportTable.render(synthetic());
    assertTrue(md.contains("| CPU | e64k6 | fp32 | 4096 | 10.0 ±0.20 | 10.5 ±0.10 | 1.05 | 10.0x, 3.8x | 20.0 |"), md);
    assertTrue(md.contains("empty call 15.0 ±1.00"), md);
    assertTrue(md.contains("**route T=0 on CPU > 1 us**"), md);
  }
}
