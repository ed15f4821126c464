// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.moerouter.Backend;
import org.moerouter.MoeRouter;
import org.moerouter.RouterConfig;
import org.moerouter.trace.Npy;

/**
 * What the time {@code route} prints covers: the library calls only, not creating the router (which loads
 * the native library on first use) nor encoding the outputs. Checked on a virtual clock that those two
 * steps advance by seconds, so the result does not depend on how fast or loaded the machine is.
 */
class RouteTimingTest {
  @TempDir Path dir;

  static final Pattern MS = Pattern.compile(" in ([0-9.]+) ms;");
  static final long TICK = 1_250_000L;  // each clock reading: 1.25 ms
  static final long LOAD = 7_000_000_000L, ENCODE = 3_000_000_000L;

  /** The seams of RouteCommand on a virtual clock, with the order in which the command used them. */
  static final class VirtualEnv implements RouteCommand.Env {
    long now;
    final List<String> events = new ArrayList<>();

    @Override
    public long nanoTime() {
      events.add("clock");
      return now += TICK;
    }

    @Override
    public MoeRouter createRouter(RouterConfig config, Backend backend) {
      events.add("create");
      now += LOAD;
      return MoeRouter.create(config, backend);
    }

    @Override
    public ByteBuffer encode(Npy.Array array) {
      events.add("encode");
      now += ENCODE;
      return Npy.encode(array);
    }
  }

  @Test
  void reportedTimeLeavesOutRouterCreationAndEncoding() throws Exception {
    Path l = dir.resolve("l.npy");
    Npy.write(l, new float[64 * 128], 64, 128);
    VirtualEnv env = new VirtualEnv();
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    int status = RouteCommand.run(new String[] {"route", "--logits", l.toString(), "--score", "softmax", "--topk", "8",
        "--backend", "cpu", "--aux-loss", "0.01", "--out", dir.resolve("o").toString()},
        new PrintStream(out, true, StandardCharsets.UTF_8), env);
    String printed = out.toString(StandardCharsets.UTF_8);
    assertEquals(0, status, printed);
    assertEquals(List.of("create", "clock", "clock"), env.events.subList(0, 3),
        "the router is created before the clock starts, and nothing it sees runs between the two readings: "
            + env.events);
    List<String> rest = env.events.subList(3, env.events.size());
    assertTrue(rest.size() >= 2 && rest.stream().allMatch("encode"::equals),
        "every output is encoded after the clock stopped: " + env.events);
    Matcher m = MS.matcher(printed);
    assertTrue(m.find(), printed);
    assertEquals("1.25", m.group(1), "the printed time is the difference of the two readings: " + printed);
  }
}
