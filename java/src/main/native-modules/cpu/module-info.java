// SPDX-License-Identifier: Apache-2.0
/**
 * The CPU-only JNI library of moe-router for linux-x86_64 (artifact classifier {@code linux-x86_64}):
 * {@code org/moerouter/linux-x86_64/libjnimoerouter.so}, no classes. On the module path the application
 * resolves it with {@code --add-modules org.moerouter.linux.x86_64} (or {@code requires} it) next to
 * {@code org.moerouter}, which loads it.
 */
module org.moerouter.linux.x86_64 {
}
