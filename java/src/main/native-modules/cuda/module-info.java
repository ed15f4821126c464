// SPDX-License-Identifier: Apache-2.0
/**
 * The JNI library of moe-router with the CUDA kernels and the static CUDA runtime, for linux-x86_64
 * (artifact classifier {@code linux-x86_64-cuda}): {@code org/moerouter/linux-x86_64-cuda/libjnimoerouter.so},
 * no classes. On the module path the application resolves it with
 * {@code --add-modules org.moerouter.linux.x86_64.cuda} (or {@code requires} it) next to {@code org.moerouter}.
 */
module org.moerouter.linux.x86_64.cuda {
}
