// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import javax.tools.JavaCompiler;
import javax.tools.ToolProvider;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * README "On the module path", tried as written: its source files are compiled against the packaged jar
 * and run from the module path with the flag the README gives, on the build JDK and on the JDK 22+ the
 * build found. The run must use a native backend (an automatic module left JavaCPP unresolved and fell
 * back to Java silently) and print no warning.
 */
class ModulePathIT {
  private static final Pattern FILE_BLOCK = Pattern.compile("```java\\n// (src/[^\\n]+)\\n(.*?)```", Pattern.DOTALL);
  private static final Pattern RUN_LINE = Pattern.compile("(?m)^java (--enable-native-access=\\S+) --module-path out:mods -m (\\S+)$");

  private static String section;

  @BeforeAll
  static void readReadme() throws IOException {
    String readme = Files.readString(Paths.get(System.getProperty("moerouter.readme", "../README.md")));
    int start = readme.indexOf("### On the module path");
    assertTrue(start >= 0, "README has no '### On the module path' section");
    int end = readme.indexOf("\n## ", start);
    section = readme.substring(start, end < 0 ? readme.length() : end);
  }

  @Test
  void readmeModuleExampleUsesTheNativeBackendWithoutWarnings(@TempDir Path dir) throws Exception {
    Map<String, String> files = new LinkedHashMap<>();
    Matcher m = FILE_BLOCK.matcher(section);
    while (m.find()) files.put(m.group(1), m.group(2));
    assertTrue(files.containsKey("src/module-info.java") && files.size() >= 2, "README example files: " + files.keySet());
    Matcher run = RUN_LINE.matcher(section);
    assertTrue(run.find(), "README has no 'java --enable-native-access=... --module-path out:mods -m ...' line");
    String nativeAccess = run.group(1), mainModule = run.group(2);

    List<Path> sources = new ArrayList<>();
    for (Map.Entry<String, String> f : files.entrySet()) {
      Path p = dir.resolve(f.getKey());
      Files.createDirectories(p.getParent());
      Files.writeString(p, f.getValue());
      sources.add(p);
    }
    Path mods = dir.resolve("mods");
    Files.createDirectories(mods);
    Path jar = Paths.get(System.getProperty("moerouter.jar"));
    Files.copy(jar, mods.resolve(jar.getFileName()));
    try (var deps = Files.list(Paths.get(System.getProperty("moerouter.lib")))) {
      for (Path d : (Iterable<Path>) deps::iterator) Files.copy(d, mods.resolve(d.getFileName()));
    }

    JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
    List<String> args = new ArrayList<>(List.of("-d", dir.resolve("out").toString(), "--module-path", mods.toString()));
    for (Path s : sources) args.add(s.toString());
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    assertEquals(0, javac.run(null, null, err, args.toArray(new String[0])), "javac:\n" + err);

    Backend expected = MoeRouter.defaultBackend();
    assertNotEquals(Backend.JAVA, expected, "the native library does not load in the test JVM itself: "
        + NativeLibrary.loadFailure());
    List<String> homes = new ArrayList<>(List.of(System.getProperty("java.home")));
    String jdk22 = System.getProperty("moerouter.jdk22.home", "");
    if (!jdk22.isEmpty() && !Paths.get(jdk22).toRealPath().equals(Paths.get(homes.get(0)).toRealPath())) homes.add(jdk22);
    for (String home : homes) {
      List<String> cmd = List.of(Paths.get(home, "bin", "java").toString(), nativeAccess,
          "-Dorg.bytedeco.javacpp.cachedir=" + dir.resolve("javacpp-cache"),
          "--module-path", dir.resolve("out") + ":" + mods, "-m", mainModule);
      Process p = new ProcessBuilder(cmd).start();
      CompletableFuture<String> out = read(p.getInputStream()), errs = read(p.getErrorStream());
      assertTrue(p.waitFor(120, TimeUnit.SECONDS), "timed out: " + cmd);
      String stdout = out.get(), stderr = errs.get();
      String where = "\n" + String.join(" ", cmd) + "\nstdout:\n" + stdout + "stderr:\n" + stderr;
      assertEquals(0, p.exitValue(), where);
      assertTrue(stdout.startsWith(expected + " ["), "expected the " + expected + " backend from the module path:" + where);
      assertFalse(stderr.contains("WARNING"), "warnings with the README's flags:" + where);
    }
    if (homes.size() == 1) System.out.println("[ModulePathIT] ran on " + homes.get(0) + " only: no JDK 22+ found");
  }

  private static CompletableFuture<String> read(InputStream in) {
    return CompletableFuture.supplyAsync(() -> {
      try {
        return new String(in.readAllBytes(), StandardCharsets.UTF_8);
      } catch (IOException e) {
        throw new IllegalStateException(e);
      }
    });
  }
}
