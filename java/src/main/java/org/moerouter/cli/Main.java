// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.util.Locale;
import org.moerouter.Backend;
import org.moerouter.MoeRouter;
import org.moerouter.MoeRouterException;
import org.moerouter.NativeLibrary;
import org.moerouter.trace.TraceCli;

/** The {@code moe-router} command line: {@code demo}, {@code route}, {@code trace}, {@code info}. */
public final class Main {
  private Main() {}

  static final String USAGE = String.join("\n",
      "usage: moe-router <command> [options]",
      "  demo  [--backend B] [--layers N] [--tokens T] [--out DIR]   R3 routing-replay demo (the main job)",
      "  " + RouteCommand.USAGE,
      "  trace inspect FILE | trace convert [--from|--to slime|miles|verl|megatron] IN OUT | trace diff A B",
      "  info                                                      backends available here");

  public static void main(String[] args) {
    System.exit(run(args, System.out, System.err));
  }

  /** Runs a command; returns the exit status (0 ok, 1 failure, 2 usage). Never throws. */
  public static int run(String[] args, PrintStream out, PrintStream err) {
    if (args.length == 0 || args[0].equals("-h") || args[0].equals("--help") || args[0].equals("help")) {
      (args.length == 0 ? err : out).println(USAGE);
      return args.length == 0 ? 2 : 0;
    }
    try {
      switch (args[0]) {
        case "route":
          return RouteCommand.run(args, out);
        case "demo":
          return DemoCommand.run(args, out);
        case "trace":
          String[] rest = new String[args.length - 1];
          System.arraycopy(args, 1, rest, 0, rest.length);
          return TraceCli.run(rest, out, err);
        case "info":
          return info(out);
        default:
          throw new Args.UsageException("unknown command '" + args[0] + "'");
      }
    } catch (Args.UsageException e) {
      err.println("moe-router: " + e.getMessage());
      err.println("run 'moe-router --help' for usage");
      return 2;
    } catch (NoSuchFileException e) {
      err.println("moe-router: error: no such file: " + e.getFile());
      return 1;
    } catch (AccessDeniedException e) {
      err.println("moe-router: error: permission denied: " + e.getFile());
      return 1;
    } catch (FileSystemException e) {
      err.println("moe-router: error: " + e.getMessage());  // "FILE: reason", or "FILE -> OTHER: reason"
      return 1;
    } catch (IOException e) {
      err.println("moe-router: error: " + e.getMessage());  // ours name the file
      return 1;
    } catch (MoeRouterException e) {
      err.println("moe-router: error: " + e.getMessage());
      return 1;
    } catch (RuntimeException | OutOfMemoryError e) {
      err.println("moe-router: internal error: " + e);
      return 1;
    }
  }

  static Backend backend(String name) {
    if (name == null) return Backend.AUTO;
    try {
      return Backend.valueOf(name.toUpperCase(Locale.ROOT));
    } catch (IllegalArgumentException e) {
      throw new Args.UsageException("--backend must be java, cpu, cuda, native or auto, got '" + name + "'");
    }
  }

  static int info(PrintStream out) {
    out.println("native library: " + (NativeLibrary.loaded() ? "loaded" : "not loaded (" + NativeLibrary.loadFailure() + ")"));
    out.println("CUDA kernels compiled: " + NativeLibrary.cudaCompiled() + ", devices: " + NativeLibrary.cudaDeviceCount());
    for (Backend b : new Backend[] {Backend.CUDA, Backend.CPU, Backend.JAVA}) {
      String why = MoeRouter.unavailableReason(b);
      out.println(b + ": " + (why == null ? "available" : "unavailable (" + why + ")"));
    }
    out.println("default backend: " + MoeRouter.defaultBackend());
    return 0;
  }
}
