#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Compiler for the JavaCPP build of the JNI library (java/pom.xml sets platform.compiler to this file):
# puts the generated JNI functions in a fixed order, then runs the real compiler with the same arguments.
#
#   javacpp-cxx.sh COMPILER-ARGUMENTS...
#
# Why: JavaCPP writes one C++ function per native method in Class.getDeclaredMethods() order, which
# HotSpot leaves unspecified (it sorts methods by the addresses of their name symbols, which move from
# one JVM run to the next). That order becomes the order of code, strings and dynamic symbols in the
# library, so two builds of one commit gave different bytes. Sorting each run of consecutive
# `JNIEXPORT ... JNICALL Java_...` definitions by its first line (the mangled name, unique per overload)
# fixes it; the definitions do not refer to each other, so their order has no other effect.
#
# Environment: MOE_JNI_CXX, the real compiler (default g++, JavaCPP's default on Linux).
# Exit status: the compiler's; 2 when a generated file cannot be normalised.
set -euo pipefail

sort_jni_functions() {
  local file="$1" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  if ! LC_ALL=C awk '
    function flush(   i, j, t, k) {
      for (i = 2; i <= n; i++) {           # insertion sort: mawk has no asort, and n is small
        t = body[i]; k = key[i]
        for (j = i - 1; j >= 1 && key[j] > k; j--) { body[j + 1] = body[j]; key[j + 1] = key[j] }
        body[j + 1] = t; key[j + 1] = k
      }
      for (i = 1; i <= n; i++) printf "%s", body[i]
      n = 0
    }
    !open && /^JNIEXPORT .* JNICALL Java_/ { open = 1; n++; key[n] = $0; body[n] = "" }
    open { body[n] = body[n] $0 "\n"; if ($0 == "}") open = 0; next }
    { if (n) flush(); print }
    END { if (open) exit 2; if (n) flush() }
  ' "$file" >"$tmp"; then
    rm -f "$tmp"
    echo "javacpp-cxx.sh: cannot normalise $file (unterminated JNI function)" >&2
    exit 2
  fi
  mv "$tmp" "$file"
}

for arg in "$@"; do
  case "$arg" in
    */jni*.cpp | jni*.cpp)  # JavaCPP's generated sources (jnijavacpp.cpp, jni<library>.cpp)
      if [[ -f "$arg" ]]; then sort_jni_functions "$arg"; fi ;;
  esac
done
exec "${MOE_JNI_CXX:-g++}" "$@"
