// SPDX-License-Identifier: Apache-2.0
package org.moerouter;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * What AUTO and NATIVE do when the JNI library does not load. The load failure is real: a child JVM
 * claims another platform ({@code -Dorg.bytedeco.javacpp.platform}), so JavaCPP finds no library for
 * it, as on an unsupported OS or CPU.
 */
class FallbackTest {
  static final List<String> NO_LIBRARY = List.of("-Dorg.bytedeco.javacpp.platform=linux-nosuchcpu",
      "--enable-native-access=ALL-UNNAMED");

  static int count(String text, String needle) {
    int n = 0;
    for (int i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + 1)) n++;
    return n;
  }

  @Test
  void autoFallsBackToJavaAndSaysWhyOnceAndNativeThrows() throws Exception {
    ChildJvm.Result r = ChildJvm.run(ChildJvm.currentJava(), NO_LIBRARY, Probe.class.getName());
    assertEquals(0, r.status, r.toString());
    assertTrue(r.out.contains("loaded=false"), r.toString());
    assertEquals(3, count(r.out, "auto=JAVA"), r.toString());
    assertEquals(1, count(r.err, "no native backend (native library failed to load: java.lang.UnsatisfiedLinkError"),
        "the fallback is logged once, with the reason:\n" + r);
    assertTrue(r.err.contains("no moe-router native library for linux-nosuchcpu on the class path: add the jar of"
        + " org.moerouter:moe-router with classifier linux-x86_64 (CPU) or linux-x86_64-cuda"), "names the artifact:\n" + r);
    assertTrue(r.err.contains("WARNING"), r.toString());
    assertTrue(r.out.contains("native-error=UNSUPPORTED: NATIVE backend unavailable (neither CUDA nor CPU): native"
        + " library failed to load"), r.toString());
    assertTrue(r.out.contains("java-buffers=ok"), r.toString());
    assertTrue(r.out.contains("java-address-error=UNSUPPORTED: raw host addresses need the native library"), r.toString());
  }

  @Test
  void requireNativePropertyTurnsTheFallbackIntoAnError() throws Exception {
    List<String> flags = new java.util.ArrayList<>(NO_LIBRARY);
    flags.add("-D" + MoeRouter.REQUIRE_NATIVE_PROPERTY + "=true");
    ChildJvm.Result r = ChildJvm.run(ChildJvm.currentJava(), flags, Probe.class.getName());
    assertEquals(0, r.status, r.toString());
    assertEquals(3, count(r.out, "auto-error=UNSUPPORTED: no native backend (-Dmoerouter.requireNative=true forbids"
        + " the Java fallback): native library failed to load"), r.toString());
    assertFalse(r.out.contains("auto=JAVA"), r.toString());
    assertFalse(r.err.contains("WARNING"), r.toString());
  }

  @Test
  void nativeIsCpuOrCudaWhereTheLibraryLoads() {
    try (MoeRouter r = MoeRouter.create(MemoryPaths.CONFIG, Backend.NATIVE)) {
      assertEquals(NativeLibrary.cudaDeviceCount() > 0 ? Backend.CUDA : Backend.CPU, r.backend());
    }
    assertEquals(null, MoeRouter.unavailableReason(Backend.NATIVE));
  }

  /** Child JVM main: three AUTO routers and one NATIVE, reported on stdout. */
  static final class Probe {
    public static void main(String[] args) {
      System.out.println("loaded=" + NativeLibrary.loaded());
      for (int i = 0; i < 3; i++) {
        try (MoeRouter r = MoeRouter.create(MemoryPaths.CONFIG)) {
          System.out.println("auto=" + r.backend());
        } catch (MoeRouterException e) {
          System.out.println("auto-error=" + e.status() + ": " + e.getMessage());
        }
      }
      try (MoeRouter r = MoeRouter.create(MemoryPaths.CONFIG, Backend.NATIVE)) {
        System.out.println("native=" + r.backend());
      } catch (MoeRouterException e) {
        System.out.println("native-error=" + e.status() + ": " + e.getMessage());
      }
      // The Java backend's direct-buffer path is pure Java; its raw-address path needs the library.
      try (MoeRouter r = MoeRouter.create(MemoryPaths.CONFIG, Backend.JAVA)) {
        int t = 2, e = MemoryPaths.CONFIG.experts(), k = MemoryPaths.CONFIG.topK();
        java.nio.FloatBuffer l = MemoryPaths.direct(4 * t * e).asFloatBuffer();
        java.nio.IntBuffer idx = MemoryPaths.direct(4 * t * k).asIntBuffer();
        java.nio.FloatBuffer w = MemoryPaths.direct(4 * t * k).asFloatBuffer();
        r.route(l, LogitsType.FP32, t, null, null, idx, w);
        System.out.println("java-buffers=ok");
        try {
          r.routeAddress(8, LogitsType.FP32, t, 0, 0, 16, 24);
        } catch (MoeRouterException ex) {
          System.out.println("java-address-error=" + ex.status() + ": " + ex.getMessage());
        }
      }
    }
  }
}
