// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import java.io.File;
import java.io.IOException;
import java.net.URI;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;

/** Runs a test main class in a fresh JVM (a given JDK, extra flags) and captures its output. */
public final class ChildJvm {
  private ChildJvm() {}

  public static final class Result {
    public final int status;
    public final String out, err;

    Result(int status, String out, String err) {
      this.status = status;
      this.out = out;
      this.err = err;
    }

    @Override
    public String toString() {
      return "exit " + status + "\n--- stdout\n" + out + "--- stderr\n" + err;
    }
  }

  /**
   * The test class path (Surefire puts all of it in java.class.path: a module's classes, its dependencies,
   * the native library) plus where the library, these test classes and JavaCPP come from, which is all a
   * child needs where java.class.path is only a launcher jar.
   */
  static String classPath(Class<?>... more) {
    Set<String> parts = new LinkedHashSet<>(List.of(System.getProperty("java.class.path").split(File.pathSeparator)));
    for (Class<?> c : new Class<?>[] {MoeRouter.class, ChildJvm.class, org.bytedeco.javacpp.Loader.class}) parts.add(location(c));
    for (Class<?> c : more) parts.add(location(c));
    for (String folder : List.of("linux-x86_64-cuda", "linux-x86_64")) {  // the native jars: CUDA first, as here
      String name = "org/moerouter/" + folder + "/libjnimoerouter.so";
      URL url = ChildJvm.class.getClassLoader().getResource(name);
      if (url != null) parts.add(root(url, name));
    }
    parts.remove("");
    return String.join(File.pathSeparator, parts);
  }

  /** The class path entry (jar or folder) that serves resource {@code name} at {@code url}. */
  private static String root(URL url, String name) {
    try {
      if (url.getProtocol().equals("jar")) {
        String file = url.getPath();  // file:/.../x.jar!/org/...
        return Paths.get(new URI(file.substring(0, file.indexOf("!/")))).toString();
      }
      Path p = Paths.get(url.toURI());
      for (int i = name.split("/").length; i > 0; i--) p = p.getParent();
      return p.toString();
    } catch (URISyntaxException e) {
      throw new IllegalStateException(e);
    }
  }

  static String location(Class<?> c) {
    try {
      return Paths.get(c.getProtectionDomain().getCodeSource().getLocation().toURI()).toString();
    } catch (URISyntaxException e) {
      throw new IllegalStateException(e);
    }
  }

  public static Path javaOf(Path jdk) {
    return jdk.resolve("bin").resolve("java");
  }

  public static Path currentJava() {
    return javaOf(Paths.get(System.getProperty("java.home")));
  }

  public static Result run(Path java, List<String> jvmFlags, String mainClass, String... args)
      throws IOException, InterruptedException {
    return runWithClassPath(java, jvmFlags, classPath(), mainClass, args);
  }

  /** As {@link #run}, on exactly the given class path (to choose which native library the child sees). */
  public static Result runWithClassPath(Path java, List<String> jvmFlags, String classPath, String mainClass,
      String... args) throws IOException, InterruptedException {
    List<String> cmd = new ArrayList<>();
    cmd.add(java.toString());
    cmd.addAll(jvmFlags);
    String cache = System.getProperty("org.bytedeco.javacpp.cachedir");
    if (cache != null) cmd.add("-Dorg.bytedeco.javacpp.cachedir=" + cache);
    cmd.add("-cp");
    cmd.add(classPath);
    cmd.add(mainClass);
    cmd.addAll(List.of(args));
    Path out = Files.createTempFile("child", ".out"), err = Files.createTempFile("child", ".err");
    try {
      Process p = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile()).start();
      if (!p.waitFor(120, TimeUnit.SECONDS)) {
        p.destroyForcibly();
        throw new AssertionError("child JVM did not finish in 120 s: " + cmd);
      }
      return new Result(p.exitValue(), Files.readString(out, StandardCharsets.UTF_8),
          Files.readString(err, StandardCharsets.UTF_8));
    } finally {
      Files.deleteIfExists(out);
      Files.deleteIfExists(err);
    }
  }
}
