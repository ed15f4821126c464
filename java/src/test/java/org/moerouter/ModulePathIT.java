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
 * README "Adoption", tried as written on the module path: its application is compiled against the packaged
 * jar into target/classes, the runtime jars go to target/dependency (as mvn dependency:copy-dependencies
 * puts them), and the README's module-path line for each native jar this build made runs it, on the build
 * JDK and on the JDK 22+ the build found. (scripts/check-adoption.sh does the same through Maven and a
 * deployed repository, and the class-path line.) The run must use a
 * native backend (an automatic module left JavaCPP unresolved, and an unresolved native module leaves
 * the library unfound: both fell back to Java silently) and print no warning.
 */
class ModulePathIT {
  private static final Pattern FILE_BLOCK = Pattern.compile("```java\\n// (src/[^\\n]+)\\n(.*?)```", Pattern.DOTALL);
  private static final Pattern RUN_LINE = Pattern.compile(
      "(?m)^java (--enable-native-access=\\S+) --add-modules (\\S+) -p target/classes:target/dependency -m (\\S+)$");
  /** The native jar each README run line resolves (its module descriptor names the module). */
  private static final Map<String, String> NATIVE_MODULES = Map.of("org.moerouter.linux.x86_64", "moerouter.cpuJar",
      "org.moerouter.linux.x86_64.cuda", "moerouter.cudaJar");

  private static String section;

  @BeforeAll
  static void readReadme() throws IOException {
    String readme = Files.readString(Paths.get(System.getProperty("moerouter.readme", "../README.md")));
    int start = readme.indexOf("## Adoption");
    assertTrue(start >= 0, "README has no '## Adoption' section");
    int end = readme.indexOf("\n## ", start);
    section = readme.substring(start, end < 0 ? readme.length() : end);
  }

  @Test
  void readmeModuleExampleUsesTheNativeBackendWithoutWarnings(@TempDir Path dir) throws Exception {
    Map<String, String> files = new LinkedHashMap<>();
    Matcher m = FILE_BLOCK.matcher(section);
    while (m.find()) files.put(m.group(1), m.group(2));
    assertTrue(files.containsKey("src/main/java/module-info.java") && files.size() >= 2, "README example files: " + files.keySet());
    Map<String, List<String>> runs = new LinkedHashMap<>();  // native module -> [native access flag, main module]
    Matcher run = RUN_LINE.matcher(section);
    while (run.find()) runs.put(run.group(2), List.of(run.group(1), run.group(3)));
    assertEquals(NATIVE_MODULES.keySet(), runs.keySet(), "README's 'java --enable-native-access=... --add-modules NATIVE"
        + " -p target/classes:target/dependency -m ...' lines, one per native jar");

    List<Path> sources = new ArrayList<>();
    for (Map.Entry<String, String> f : files.entrySet()) {
      Path p = dir.resolve(f.getKey());
      Files.createDirectories(p.getParent());
      Files.writeString(p, f.getValue());
      sources.add(p);
    }
    Path api = dir.resolve("api");  // moe-router.jar and JavaCPP: what the application compiles against
    Files.createDirectories(api);
    Path jar = Paths.get(System.getProperty("moerouter.jar"));
    Files.copy(jar, api.resolve(jar.getFileName()));
    try (var deps = Files.list(Paths.get(System.getProperty("moerouter.lib")))) {
      for (Path d : (Iterable<Path>) deps::iterator) Files.copy(d, api.resolve(d.getFileName()));
    }

    JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
    Path classes = dir.resolve("classes");
    List<String> args = new ArrayList<>(List.of("-d", classes.toString(), "--module-path", api.toString()));
    for (Path s : sources) args.add(s.toString());
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    assertEquals(0, javac.run(null, null, err, args.toArray(new String[0])), "javac:\n" + err);

    // This JVM has both native jars (java/pom.xml): the CUDA library where it was built, which reports the GPUs.
    Backend best = MoeRouter.defaultBackend();
    assertNotEquals(Backend.JAVA, best, "the native library does not load in the test JVM itself: "
        + NativeLibrary.loadFailure());
    List<String> homes = new ArrayList<>(List.of(System.getProperty("java.home")));
    String jdk22 = System.getProperty("moerouter.jdk22.home", "");
    if (!jdk22.isEmpty() && !Paths.get(jdk22).toRealPath().equals(Paths.get(homes.get(0)).toRealPath())) homes.add(jdk22);
    int variants = 0;
    for (Map.Entry<String, List<String>> r : runs.entrySet()) {
      boolean cuda = r.getKey().endsWith(".cuda");
      if (cuda && !"false".equals(System.getProperty("moerouter.cudaSkipped"))) continue;  // no CUDA jar built
      variants++;
      Path nativeJar = Paths.get(System.getProperty(NATIVE_MODULES.get(r.getKey())));
      Path project = dir.resolve(r.getKey());  // a client project after mvn package dependency:copy-dependencies
      Path deps = project.resolve("target/dependency");
      Files.createDirectories(deps);
      try (var jars = Files.list(api)) {
        for (Path j : (Iterable<Path>) jars::iterator) Files.copy(j, deps.resolve(j.getFileName()));
      }
      Files.copy(nativeJar, deps.resolve(nativeJar.getFileName()));
      copyTree(classes, project.resolve("target/classes"));
      Backend expected = cuda ? best : Backend.CPU;
      for (String home : homes) {
        List<String> cmd = List.of(Paths.get(home, "bin", "java").toString(), r.getValue().get(0),
            "-Dorg.bytedeco.javacpp.cachedir=" + dir.resolve("javacpp-cache"), "--add-modules", r.getKey(),
            "-p", "target/classes:target/dependency", "-m", r.getValue().get(1));
        Process p = new ProcessBuilder(cmd).directory(project.toFile()).start();
        CompletableFuture<String> out = read(p.getInputStream()), errs = read(p.getErrorStream());
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "timed out: " + cmd);
        String stdout = out.get(), stderr = errs.get();
        String where = "\n" + String.join(" ", cmd) + "\nstdout:\n" + stdout + "stderr:\n" + stderr;
        assertEquals(0, p.exitValue(), where);
        assertTrue(stdout.startsWith(expected + " ["), "expected the " + expected + " backend from the module path:" + where);
        assertEquals("", stderr, "output on stderr with the README's flags:" + where);
      }
    }
    assertTrue(variants >= 1, "no native jar was tried");
    if (homes.size() == 1) System.out.println("[ModulePathIT] ran on " + homes.get(0) + " only: no JDK 22+ found");
  }

  private static void copyTree(Path from, Path to) throws IOException {
    try (var files = Files.walk(from)) {
      for (Path f : (Iterable<Path>) files::iterator) {
        Path t = to.resolve(from.relativize(f).toString());
        if (Files.isDirectory(f)) Files.createDirectories(t);
        else Files.copy(f, t);
      }
    }
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
