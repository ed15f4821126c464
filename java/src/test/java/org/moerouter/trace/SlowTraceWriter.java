// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.nio.channels.WritableByteChannel;
import java.nio.file.Path;

/** Child-process main for the crash-safety test: writes a trace slowly so it can be killed mid-write. */
public final class SlowTraceWriter {
  public static void main(String[] args) throws Exception {
    RoutingTrace t = TraceTestSupport.random(777, 64, 8, new int[] {0, 1, 2, 3}, new int[] {4000, 4000});
    TraceFiles.write(t, Path.of(args[0]), SlowChannel::new);
    System.out.println("done");
  }

  /** Writes at most 4 KiB per call and pauses between calls. */
  static final class SlowChannel extends PartialWriteChannel {
    SlowChannel(WritableByteChannel in) {
      super(in);
    }

    @Override
    long limit() {
      return 4096;
    }

    @Override
    void wrote(int n) {
      try {
        Thread.sleep(20);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }
  }
}
