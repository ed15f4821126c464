// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.WritableByteChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import java.util.function.UnaryOperator;

/**
 * The files one command writes into a folder, replaced as a set: after a failed run the folder holds
 * the previous set untouched, after a successful one exactly the new set (a member this run did not
 * produce, such as an old {@code grad_logits.npy}, is removed, so it cannot be mistaken for a result).
 *
 * <p>Every member is first written to a temporary file beside its target and forced to disk; only
 * when all of them are complete are stale members deleted and the temporaries renamed over their
 * targets. Targets that are directories are refused before anything is written. Disk-full, permission
 * and similar errors therefore happen while only temporaries exist, and those are deleted. What is
 * left is a crash between the renames (each one atomic), which could leave a mix. Every error names
 * the file.
 */
final class OutputSet {
  private final Path dir;
  private final List<String> members;
  private final Map<String, ByteBuffer> content = new LinkedHashMap<>();

  /** {@code members}: every file name the command can write into {@code dir}. */
  OutputSet(Path dir, String... members) {
    this.dir = dir;
    this.members = List.of(members);
  }

  void put(String name, ByteBuffer bytes) {
    if (!members.contains(name)) throw new IllegalArgumentException(name + " is not a member of " + members);
    content.put(name, bytes);
  }

  /** Members put so far. */
  int size() {
    return content.size();
  }

  void commit() throws IOException {
    commit(UnaryOperator.identity());
  }

  /** {@code wrap} lets tests interpose a failing channel (a full disk). */
  void commit(UnaryOperator<WritableByteChannel> wrap) throws IOException {
    try {
      Files.createDirectories(dir);
    } catch (IOException e) {
      throw named(dir, "cannot create the output folder", e);
    }
    for (String name : content.keySet()) {
      Path target = dir.resolve(name);
      if (Files.isDirectory(target, LinkOption.NOFOLLOW_LINKS))
        throw new IOException(target + ": is a directory; nothing was written");
    }
    Map<String, Path> temps = new LinkedHashMap<>();
    try {
      for (Map.Entry<String, ByteBuffer> e : content.entrySet()) {
        Path target = dir.resolve(e.getKey());
        Path tmp = dir.resolve("." + e.getKey() + ".tmp-" + Long.toHexString(ThreadLocalRandom.current().nextLong()));
        temps.put(e.getKey(), tmp);
        try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
          WritableByteChannel out = wrap.apply(ch);
          ByteBuffer b = e.getValue().duplicate();
          while (b.hasRemaining()) out.write(b);
          ch.force(true);
        } catch (IOException x) {
          throw named(target, "cannot write", x);
        }
      }
      for (String name : members) {
        if (content.containsKey(name)) continue;
        Path stale = dir.resolve(name);
        if (!Files.isRegularFile(stale, LinkOption.NOFOLLOW_LINKS)) continue;
        try {
          Files.delete(stale);
        } catch (IOException x) {
          throw named(stale, "cannot remove the stale output", x);
        }
      }
      List<Path> done = new ArrayList<>();
      for (Map.Entry<String, Path> e : temps.entrySet()) {
        Path target = dir.resolve(e.getKey());
        try {
          Files.move(e.getValue(), target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        } catch (AtomicMoveNotSupportedException x) {
          throw new IOException(target + ": the file system cannot rename atomically", x);
        } catch (IOException x) {
          throw named(target, "cannot replace" + (done.isEmpty() ? "" : " (already replaced: " + done + ")"), x);
        }
        done.add(target.getFileName());
      }
      syncDirectory();
    } finally {
      for (Path tmp : temps.values()) {
        try {
          Files.deleteIfExists(tmp);
        } catch (IOException ignored) {
          // the original failure matters more; a stale .tmp file names itself
        }
      }
    }
  }

  private static IOException named(Path file, String what, IOException cause) {
    String reason = cause instanceof FileSystemException && ((FileSystemException) cause).getReason() != null
        ? ((FileSystemException) cause).getReason() : cause.getMessage();
    return new IOException(file + ": " + what + ": " + reason, cause);
  }

  private void syncDirectory() {
    try (FileChannel d = FileChannel.open(dir, StandardOpenOption.READ)) {
      d.force(true);
    } catch (IOException | UnsupportedOperationException ignored) {
      // not every platform can open a directory; the renames have happened
    }
  }
}
