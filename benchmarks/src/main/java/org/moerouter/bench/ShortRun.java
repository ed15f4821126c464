// SPDX-License-Identifier: Apache-2.0
package org.moerouter.bench;

import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Measurement;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.Warmup;

/**
 * The run profile of the ns-scale call benchmarks (RoutingBenchmark, JniOverheadBenchmark, HostCallBenchmark,
 * CpuGoalsBenchmark):
 * one shared state per trial, average time in ns, one fork, 2 x 200 ms warm-up and 3 x 300 ms measurement
 * iterations. JMH reads these from the superclass (its "inheritance" sample), so a subclass states only what
 * differs; {@link BenchMain} overrides the iteration counts and times from its command line.
 */
@State(Scope.Benchmark)
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.NANOSECONDS)
@Fork(1)
@Warmup(iterations = 2, time = 200, timeUnit = TimeUnit.MILLISECONDS)
@Measurement(iterations = 3, time = 300, timeUnit = TimeUnit.MILLISECONDS)
public abstract class ShortRun {}
