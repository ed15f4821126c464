// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The two native artifacts (README "Adoption"): the library of the CPU jar (classifier linux-x86_64)
 * carries no CUDA, the one of the CUDA jar (linux-x86_64-cuda) has the kernels; each loads on its own
 * and routes as the Java backend does; with both on the class path the CUDA one loads. Needs the build's
 * folders (java/target/native/cpu and cuda), so it runs under Maven only.
 */
class NativeVariantsTest {
  private static Path nativeDir;
  private static boolean cudaBuilt;

  @BeforeAll
  static void builtFolders() {
    Assumptions.assumeFalse(Boolean.getBoolean("moerouter.nativeSkipped"), "the native build was skipped");
    Assumptions.assumeTrue(NativeCompatibilityTest.isLinuxX86(), "the JNI libraries are built for linux-x86_64 only");
    String dir = System.getProperty("moerouter.nativeDir");
    Assumptions.assumeTrue(dir != null, "not run by Maven (moerouter.nativeDir unset)");
    nativeDir = Paths.get(dir);
    cudaBuilt = "false".equals(System.getProperty("moerouter.cudaSkipped"));
  }

  static List<String> variants() {
    return cudaBuilt ? List.of("cpu", "cuda") : List.of("cpu");
  }

  static Path library(String variant) {
    return nativeDir.resolve(variant).resolve("org/moerouter")
        .resolve(variant.equals("cuda") ? "linux-x86_64-cuda" : "linux-x86_64").resolve("libjnimoerouter.so");
  }

  /** The static CUDA runtime opens the driver by this name; the CPU library must not contain it. */
  @Test
  void onlyTheCudaLibraryCarriesTheCudaRuntime() throws IOException {
    String driver = "libcuda.so.1";
    assertFalse(contains(Files.readAllBytes(library("cpu")), driver), library("cpu") + " contains the CUDA runtime");
    if (cudaBuilt)
      assertTrue(contains(Files.readAllBytes(library("cuda")), driver), library("cuda") + " lacks the CUDA runtime");
    assertEquals(cudaBuilt, Files.exists(nativeDir.resolve("cuda")), "a CUDA folder without a CUDA build, or none with one");
  }

  /** This JVM has both folders on its class path (java/pom.xml): the CUDA library wins where it exists. */
  @Test
  void withBothJarsTheCudaLibraryLoads() {
    assertTrue(NativeLibrary.loaded(), String.valueOf(NativeLibrary.loadFailure()));
    assertEquals(cudaBuilt, NativeLibrary.cudaCompiled());
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("variants")
  void eachLibraryLoadsAloneAndRoutesAsTheJavaBackend(String variant) throws Exception {
    String cp = String.join(File.pathSeparator, ChildJvm.location(MoeRouter.class),
        ChildJvm.location(NativeVariantsTest.class), ChildJvm.location(org.bytedeco.javacpp.Loader.class),
        nativeDir.resolve(variant).toString());
    ChildJvm.Result r = ChildJvm.runWithClassPath(ChildJvm.currentJava(), List.of("--enable-native-access=ALL-UNNAMED"),
        cp, Probe.class.getName());
    assertEquals(0, r.status, r.toString());
    assertEquals("", r.err, r.toString());
    assertEquals("cuda kernels: " + variant.equals("cuda") + "\n" + Probe.routes(Backend.JAVA), r.out);
  }

  private static boolean contains(byte[] haystack, String needle) {
    byte[] n = needle.getBytes(StandardCharsets.US_ASCII);
    outer:
    for (int i = 0; i + n.length <= haystack.length; i++) {
      for (int j = 0; j < n.length; j++)
        if (haystack[i + j] != n[j]) continue outer;
      return true;
    }
    return false;
  }

  /** Run in the child: which library loaded, and the experts two configurations pick on the native backend. */
  public static final class Probe {
    public static void main(String[] args) {
      System.out.print("cuda kernels: " + NativeLibrary.cudaCompiled() + "\n" + routes(Backend.NATIVE));
    }

    static String routes(Backend backend) {
      float[] bias = new float[256];
      for (int i = 0; i < bias.length; i++) bias[i] = (float) Math.cos(i) * 0.01f;
      List<RouterConfig> configs = List.of(RouterConfig.builder(64, 6).build(),
          RouterConfig.builder(256, 8).scoreFunction(ScoreFunction.SIGMOID).expertBias(bias).groups(8, 4).scale(2.5f).build());
      StringBuilder out = new StringBuilder();
      int tokens = 33;
      for (RouterConfig c : configs) {
        float[] logits = new float[tokens * c.experts()];
        for (int i = 0; i < logits.length; i++) logits[i] = (float) Math.sin(i * 0.37);
        int[] idx = new int[tokens * c.topK()];
        float[] weights = new float[tokens * c.topK()];
        try (MoeRouter router = MoeRouter.create(c, backend)) {
          router.route(logits, tokens, idx, weights);
        }
        out.append(c.experts()).append(" experts: ").append(Arrays.toString(idx)).append('\n');
      }
      return out.toString();
    }
  }
}
