// SPDX-License-Identifier: Apache-2.0
package org.moerouter.cli;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** GNU-style options ({@code --name value}, {@code --flag}) plus positional arguments. */
final class Args {
  final Map<String, String> options = new HashMap<>();
  final Set<String> flags = new HashSet<>();
  final List<String> positional = new ArrayList<>();

  /** Every command takes {@code --help} (or {@code -h}); a repeated option is an error, not "last wins". */
  static Args parse(String[] argv, int from, Set<String> valued, Set<String> booleans) {
    Args a = new Args();
    for (int i = from; i < argv.length; i++) {
      String s = argv[i];
      if (s.equals("-h") || s.equals("--help")) {
        a.flags.add("help");
        continue;
      }
      if (!s.startsWith("--")) {
        a.positional.add(s);
        continue;
      }
      String name = s.substring(2);
      String inline = null;
      int eq = name.indexOf('=');
      if (eq >= 0) {
        inline = name.substring(eq + 1);
        name = name.substring(0, eq);
      }
      if (booleans.contains(name) && inline == null) {
        if (!a.flags.add(name)) throw new UsageException("option --" + name + " given twice");
      } else if (valued.contains(name)) {
        String v = inline != null ? inline : i + 1 < argv.length ? argv[++i] : null;
        if (v == null) throw new UsageException("option --" + name + " needs a value");
        if (a.options.put(name, v) != null) throw new UsageException("option --" + name + " given twice");
      } else {
        throw new UsageException("unknown option --" + name);
      }
    }
    return a;
  }

  /**
   * The options of a command taking no positional argument (argv[0] is its name): null when {@code --help}
   * asked for {@code help}, printed on {@code out} (the command then exits 0); a positional argument is a
   * usage error.
   */
  static Args command(String[] argv, Set<String> valued, Set<String> booleans, String help, PrintStream out) {
    Args a = parse(argv, 1, valued, booleans);
    if (a.flag("help")) {
      out.println(help);
      return null;
    }
    if (!a.positional.isEmpty()) throw new UsageException("unexpected argument '" + a.positional.get(0) + "'");
    return a;
  }

  String get(String name) {
    return options.get(name);
  }

  String require(String name) {
    String v = options.get(name);
    if (v == null) throw new UsageException("missing required option --" + name);
    return v;
  }

  int intValue(String name, int dflt) {
    String v = options.get(name);
    if (v == null) return dflt;
    try {
      return Integer.parseInt(v);
    } catch (NumberFormatException e) {
      throw new UsageException("--" + name + " expects an integer, got '" + v + "'");
    }
  }

  float floatValue(String name, float dflt) {
    String v = options.get(name);
    if (v == null) return dflt;
    try {
      return Float.parseFloat(v);
    } catch (NumberFormatException e) {
      throw new UsageException("--" + name + " expects a number, got '" + v + "'");
    }
  }

  double doubleValue(String name, double dflt) {
    String v = options.get(name);
    if (v == null) return dflt;
    try {
      return Double.parseDouble(v);
    } catch (NumberFormatException e) {
      throw new UsageException("--" + name + " expects a number, got '" + v + "'");
    }
  }

  boolean flag(String name) {
    return flags.contains(name);
  }

  /** A command-line mistake: reported with the usage hint, exit status 2. */
  static final class UsageException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    UsageException(String message) {
      super(message);
    }
  }
}
