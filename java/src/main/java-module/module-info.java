// SPDX-License-Identifier: Apache-2.0
/**
 * moe-router: MoE token routing with record/replay over pure-Java, native CPU and CUDA backends.
 *
 * <p>Explicit (not automatic) so that a module-path application gets JavaCPP resolved with it: an
 * automatic module does not pull in the explicit javacpp module, and the native backend then silently
 * fell back to Java. JavaCPP loads the JNI library that ships in {@code org/moerouter/linux-x86_64};
 * native access must be enabled for it ({@code --enable-native-access=org.bytedeco.javacpp}, and
 * {@code org.moerouter} for the FFM host calls of JDK 22+).
 */
module org.moerouter {
  requires org.bytedeco.javacpp;
  requires jdk.unsupported;                 // sun.misc.Unsafe in HostMemory

  exports org.moerouter;
  exports org.moerouter.replay;
  exports org.moerouter.trace;
}
