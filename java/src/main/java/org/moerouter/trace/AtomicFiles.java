// SPDX-License-Identifier: Apache-2.0
package org.moerouter.trace;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.channels.WritableByteChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.concurrent.ThreadLocalRandom;
import java.util.function.UnaryOperator;

/**
 * Crash-safe file replacement: the content goes to a temporary file in the target's directory,
 * is forced to disk, then renamed over the target in one atomic step, and the directory entry is
 * synced. A failure or a kill at any point leaves the previous file byte-identical (a stale
 * {@code .NAME.tmp-*} file may remain after a kill; a failed write deletes its own).
 */
final class AtomicFiles {
  private AtomicFiles() {}

  /** Writes the whole content through the given channel. */
  interface Body {
    void writeTo(WritableByteChannel channel) throws IOException;
  }

  static void write(Path target, Body body) throws IOException {
    write(target, body, UnaryOperator.identity());
  }

  /** {@code wrap} lets tests interpose a failing or slow channel. */
  static void write(Path target, Body body, UnaryOperator<WritableByteChannel> wrap) throws IOException {
    Path abs = target.toAbsolutePath();
    Path dir = abs.getParent();
    if (dir == null) throw new IOException(target + ": has no parent directory");
    if (Files.isDirectory(abs)) throw new IOException(target + ": is a directory");
    Path tmp = dir.resolve("." + abs.getFileName() + ".tmp-" + Long.toHexString(ThreadLocalRandom.current().nextLong()));
    boolean done = false;
    try {
      try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
        body.writeTo(wrap.apply(ch));
        ch.force(true);
      }
      try {
        Files.move(tmp, abs, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
      } catch (AtomicMoveNotSupportedException e) {
        throw new IOException(target + ": the file system cannot rename atomically", e);
      }
      done = true;
      syncDirectory(dir);
    } finally {
      if (!done) {
        try {
          Files.deleteIfExists(tmp);
        } catch (IOException ignored) {
          // the original failure matters more
        }
      }
    }
  }

  private static void syncDirectory(Path dir) {
    try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
      d.force(true);
    } catch (IOException | UnsupportedOperationException ignored) {
      // not every platform can open a directory; the rename itself has happened
    }
  }

  /** Writes all of {@code buf} (channels may write partially). */
  static void writeFully(WritableByteChannel ch, java.nio.ByteBuffer buf) throws IOException {
    while (buf.hasRemaining()) ch.write(buf);
  }
}
