// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import java.io.IOException;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.util.Locale;
import java.util.Properties;
import java.util.Set;
import org.moerouter.Backend;
import org.moerouter.MoeRouter;
import org.moerouter.MoeRouterException;
import org.moerouter.NativeLibrary;

/**
 * The {@code moe-router} command line: {@code demo}, {@code route}, {@code case}, {@code trace}, {@code info}. The only
 * public entry points are {@link #main} and {@link #run}; the commands themselves are package-private.
 *
 * <pre>{@code
 * java -jar moe-router-cli.jar trace inspect trace.safetensors
 * int status = Main.run(new String[] {"info"}, System.out, System.err);   // embedded, no System.exit
 * }</pre>
 *
 * <p>Errors go to the error stream as one line starting with {@code moe-router: error: }, naming the file,
 * flag or value; usage errors add a pointer to {@code --help}.
 */
public final class Main {
  private Main() {}

  static final String USAGE = String.join("\n",
      "usage: moe-router <command> [options]      (moe-router <command> --help for a command's options)",
      "  demo  " + DemoCommand.OPTIONS,
      "        R3 routing-replay demo (the main job)",
      "  " + RouteCommand.USAGE,
      "  " + CaseCommand.USAGE,
      "        one reference case (goldens_v2 format) through the library, every expected output written",
      "  trace inspect FILE | trace convert [--from|--to slime|miles|verl|megatron] IN OUT | trace diff A B",
      "  info                backends available here",
      "  --version           the version of moe-router");

  /** Every error, whatever the command, starts with this. */
  static final String ERROR = "moe-router: error: ";

  /**
   * Runs a command and exits the JVM with its status.
   *
   * @param args the command and its arguments, as {@link #run} takes them
   */
  public static void main(String[] args) {
    System.exit(run(args, System.out, System.err));
  }

  /**
   * Runs a command. Never throws and never exits the JVM.
   *
   * @param args the command ({@code demo}, {@code route}, {@code trace}, {@code info}, {@code --version},
   *     {@code --help}) followed by its arguments
   * @param out where results go
   * @param err where errors, notes and progress go
   * @return the exit status: 0 success, 1 failure (bad input, I/O, routing), 2 usage error
   */
  public static int run(String[] args, PrintStream out, PrintStream err) {
    if (args.length == 0 || args[0].equals("-h") || args[0].equals("--help") || args[0].equals("help")) {
      (args.length == 0 ? err : out).println(USAGE);
      return args.length == 0 ? 2 : 0;
    }
    if (args[0].equals("--version") || args[0].equals("version")) {
      out.println("moe-router " + version());
      return 0;
    }
    String command = args[0];
    try {
      switch (command) {
        case "route":
          return RouteCommand.run(args, out);
        case "case":
          return CaseCommand.run(args, out);
        case "demo":
          return DemoCommand.run(args, out, err);
        case "trace":
          String[] rest = new String[args.length - 1];
          System.arraycopy(args, 1, rest, 0, rest.length);
          return TraceCommand.run(rest, out, err);
        case "info":
          Args a = Args.command(args, Set.of(), Set.of(),
              "usage: moe-router info\nWhich backends load here, and why the others do not.", out);
          return a == null ? 0 : info(out);
        default:
          command = null;
          throw new Args.UsageException("unknown command '" + args[0] + "'");
      }
    } catch (Args.UsageException e) {
      err.println(ERROR + e.getMessage());
      err.println("run 'moe-router " + (command == null ? "" : command + " ") + "--help' for usage");
      return 2;
    } catch (NoSuchFileException e) {
      err.println(ERROR + "no such file: " + e.getFile());
      return 1;
    } catch (AccessDeniedException e) {
      err.println(ERROR + "permission denied: " + e.getFile());
      return 1;
    } catch (FileSystemException e) {
      err.println(ERROR + e.getMessage());  // "FILE: reason", or "FILE -> OTHER: reason"
      return 1;
    } catch (IOException e) {
      err.println(ERROR + e.getMessage());  // ours name the file
      return 1;
    } catch (MoeRouterException e) {
      err.println(ERROR + e.getMessage());
      return 1;
    } catch (RuntimeException | OutOfMemoryError e) {
      err.println(ERROR + "internal: " + e);
      return 1;
    }
  }

  /** The project version, from a resource Maven fills in. */
  static String version() {
    try (InputStream in = Main.class.getResourceAsStream("version.properties")) {
      if (in == null) return "(unknown version)";
      Properties p = new Properties();
      p.load(in);
      return p.getProperty("version", "(unknown version)");
    } catch (IOException e) {
      return "(unknown version)";
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
