#!/usr/bin/env bash
# Each executable given lists libstdc++ before LibTorch's libraries among its NEEDED entries, so the
# dynamic linker binds std:: symbols to libstdc++ rather than to copies LibTorch exports
# (pytorch/pytorch#133437; CMakeLists.txt says why).
set -uo pipefail
status=0
for binary in "$@"; do
  needed=$(readelf -d "$binary" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  stdcxx=$(grep -n '^libstdc++' <<<"$needed" | head -1 | cut -d: -f1)
  torch=$(grep -nE '^lib(torch|c10)' <<<"$needed" | head -1 | cut -d: -f1)
  if [ -z "$stdcxx" ] || { [ -n "$torch" ] && [ "$stdcxx" -gt "$torch" ]; }; then
    echo "FAIL $binary: libstdc++ is not before LibTorch in NEEDED:" $needed
    status=1
  else
    echo "ok $binary: libstdc++ at $stdcxx, LibTorch at ${torch:-none}"
  fi
done
exit $status
