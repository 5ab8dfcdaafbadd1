#!/usr/bin/env bash
# Installs the NBD clients and peers that the nbd crate's end-to-end tests and ci/nbd-bench.sh
# use: nbdinfo/nbdcopy (libnbd-bin), fio (nbd engine), nbdkit (peer server), qemu-io/qemu-img/
# qemu-nbd (qemu-utils). Safe to run again: an already complete install does nothing.
# Runs as root (CI, this machine) or through sudo when there is one.
set -euo pipefail

need=()
command -v nbdinfo >/dev/null 2>&1 || need+=(libnbd-bin)
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v nbdkit >/dev/null 2>&1 || need+=(nbdkit)
{ command -v qemu-io >/dev/null 2>&1 && command -v qemu-img >/dev/null 2>&1 \
  && command -v qemu-nbd >/dev/null 2>&1; } || need+=(qemu-utils)

if [ "${#need[@]}" -eq 0 ]; then
  echo "nbd-deps: libnbd-bin, fio, nbdkit and qemu-utils already installed"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "nbd-deps: need root or sudo to install ${need[*]}" >&2
  exit 1
fi

echo "nbd-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
