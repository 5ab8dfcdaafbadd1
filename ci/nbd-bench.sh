#!/usr/bin/env bash
# NBD server comparison (not run in CI): qemu-img bench 4 KiB reads and writes at queue depth
# 1 and 16, same client, one run, against
#   - wdfkit serve-nbd (RAM disk) with each sync scope (none, queue, device), plus scope none
#     without polling the socket before blocking (--spin-us 0) and with every reply handed to
#     a writer thread (the threading alternative),
#   - nbdkit's memory plugin, default and with --filter=noparallel serialize=all-requests,
#   - qemu-nbd on a raw file in /dev/shm,
# all on loopback Unix sockets; then fio (nbd engine) 4 KiB random reads/writes at QD16 on the
# same servers; then the RAM disk's resident memory after writing N MiB.
#
# Usage: ci/nbd-bench.sh [--quick]     (--quick: fewer requests, no fio; a smoke run)
# Env:   COUNT1 / COUNT16 requests per qemu-img run at QD1 / QD16 (default 50000 / 200000),
#        REPS runs of each qemu-img measurement, the median reported (default 3),
#        FIO_RUNTIME seconds per fio run (default 5; 0 skips fio), SIZE export size (1G).
# Prints markdown tables on stdout; progress on stderr. Installs nbdkit etc. if missing
# (ci/nbd-deps.sh). Everything listens on Unix sockets in a private temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT1=${COUNT1:-50000}
COUNT16=${COUNT16:-200000}
REPS=${REPS:-3}
FIO_RUNTIME=${FIO_RUNTIME:-5}
SIZE=${SIZE:-1G}
if [ "${1:-}" = "--quick" ]; then
  COUNT1=20000 COUNT16=50000 FIO_RUNTIME=0 REPS=1
fi

bash ci/nbd-deps.sh >&2
cargo build --release -q -p wdfkit -p nbd >&2
WDFKIT=target/release/wdfkit
if ! "$WDFKIT" serve-nbd --help >/dev/null 2>&1; then
  WDFKIT_CMD=(target/release/nbd-serve)   # same code, the nbd crate's own binary
else
  WDFKIT_CMD=("$WDFKIT" serve-nbd)
fi

TMP=$(mktemp -d /tmp/nbd-bench.XXXXXX)
SHM=/dev/shm/nbd-bench-$$.img
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$TMP" "$SHM"
}
trap cleanup EXIT

log() { echo "nbd-bench: $*" >&2; }

# start NAME CMD...: starts a server on $TMP/NAME.sock, waits for the socket.
start() {
  local name=$1; shift
  SOCK=$TMP/$name.sock
  rm -f "$SOCK"
  "$@" >"$TMP/$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 200); do
    [ -S "$SOCK" ] && return 0
    sleep 0.05
  done
  log "$name did not start:"; cat "$TMP/$name.log" >&2; exit 1
}

stop() {
  kill "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
}

opts() { echo "driver=nbd,server.type=unix,server.path=$SOCK"; }

# bench1 DEPTH COUNT [-w]: IOPS of one qemu-img bench run (a number, or 0 on failure).
bench1() {
  local depth=$1 count=$2; shift 2
  local out secs
  out=$(qemu-img bench --image-opts -c "$count" -d "$depth" -s 4096 "$@" "$(opts)" 2>&1)
  secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
  [ -n "$secs" ] || { log "qemu-img bench failed: $out"; echo 0; return; }
  awk -v c="$count" -v s="$secs" 'BEGIN { printf "%.0f", c / s }'
}

# bench DEPTH COUNT [-w]: median IOPS of REPS runs, as "123.4k (min-max)".
bench() {
  local vals=() i
  for i in $(seq "$REPS"); do vals+=("$(bench1 "$@")"); done
  printf '%s\n' "${vals[@]}" | sort -n | awk '{ v[NR] = $1 } END {
    m = v[int((NR + 1) / 2)]
    if (NR > 1) printf "%.1fk (%.0f-%.0f)", m / 1000, v[1] / 1000, v[NR] / 1000
    else printf "%.1fk", m / 1000 }'
}

# fio_iops RW: IOPS of a fio nbd-engine run at QD16.
fio_iops() {
  local out
  out=$(fio --name=b --ioengine=nbd --uri="nbd+unix:///?socket=$SOCK" --rw="$1" --bs=4k \
        --iodepth=16 --size=256m --time_based --runtime="$FIO_RUNTIME" --output-format=terse \
        --terse-version=3 2>/dev/null) || { echo "-"; return; }
  # terse v3: field 8 read IOPS, field 49 write IOPS.
  awk -F';' -v rw="$1" '/^3;/ { v = (rw == "randread") ? $8 : $49; printf "%.1fk", v / 1000 }' <<<"$out"
}

declare -a NAMES CMDS
add() { NAMES+=("$1"); CMDS+=("$2"); }
add "wdfkit serve-nbd, scope none" "${WDFKIT_CMD[*]} --size $SIZE --sync-scope none --unix SOCK"
add "wdfkit serve-nbd, scope queue" "${WDFKIT_CMD[*]} --size $SIZE --sync-scope queue --unix SOCK"
add "wdfkit serve-nbd, scope device" "${WDFKIT_CMD[*]} --size $SIZE --sync-scope device --unix SOCK"
add "wdfkit serve-nbd, scope none, no polling before blocking" "${WDFKIT_CMD[*]} --size $SIZE --spin-us 0 --unix SOCK"
add "wdfkit serve-nbd, scope none, writer-thread replies" "${WDFKIT_CMD[*]} --size $SIZE --reply-path writer-thread --unix SOCK"
add "nbdkit memory (parallel, 16 threads)" "nbdkit -f -U SOCK memory $SIZE"
add "nbdkit memory + noparallel serialize=all-requests" "nbdkit -f -U SOCK --filter=noparallel memory $SIZE serialize=all-requests"
add "qemu-nbd, raw file on /dev/shm" "qemu-nbd -t -f raw -k SOCK $SHM"

log "machine: $(nproc) vCPU, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
echo "Machine: $(nproc) vCPU ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(uname -sr);" \
  "$(qemu-img --version | head -1); nbdkit $(nbdkit --version | awk '{print $2}'); fio $(fio --version)."
echo
echo "qemu-img bench, 4 KiB, $COUNT1 requests at QD1 and $COUNT16 at QD16; IOPS, median of $REPS runs (min-max, thousands):"
echo
echo "| Server | QD1 read | QD1 write | QD16 read | QD16 write |"
echo "|---|---|---|---|---|"
declare -A FIO
for i in "${!NAMES[@]}"; do
  name=${NAMES[$i]}
  slug=s$i
  truncate -s "$SIZE" "$SHM"
  # shellcheck disable=SC2086
  start "$slug" ${CMDS[$i]//SOCK/$TMP/$slug.sock}
  log "$name"
  w1=$(bench 1 "$COUNT1" -w); w16=$(bench 16 "$COUNT16" -w)
  r1=$(bench 1 "$COUNT1"); r16=$(bench 16 "$COUNT16")
  echo "| $name | $r1 | $w1 | $r16 | $w16 |"
  if [ "$FIO_RUNTIME" != 0 ]; then
    FIO[$i]="| $name | $(fio_iops randread) | $(fio_iops randwrite) |"
  fi
  stop
  rm -f "$SHM"
done

if [ "$FIO_RUNTIME" != 0 ]; then
  echo
  echo "fio --ioengine=nbd, 4 KiB random, QD16, ${FIO_RUNTIME} s each, IOPS:"
  echo
  echo "| Server | randread | randwrite |"
  echo "|---|---|---|"
  for i in "${!NAMES[@]}"; do echo "${FIO[$i]}"; done
fi

# Resident memory after writing N MiB (sequential 4 KiB writes from offset 0).
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$PID/status"; }
echo
echo "Resident memory (VmRSS, MiB) of a $SIZE export after writing N MiB:"
echo
echo "| Server | 0 MiB | 64 MiB | 256 MiB | 512 MiB |"
echo "|---|---|---|---|---|"
for which in wdfkit nbdkit; do
  if [ $which = wdfkit ]; then
    start rss "${WDFKIT_CMD[@]}" --size "$SIZE" --unix "$TMP/rss.sock"
    label="wdfkit serve-nbd, scope none"
  else
    start rss nbdkit -f -U "$TMP/rss.sock" memory "$SIZE"
    label="nbdkit memory"
  fi
  row="| $label | $(( $(rss) / 1024 ))"
  done_mib=0
  for n in 64 256 512; do
    qemu-img bench --image-opts -w -c $(( (n - done_mib) * 256 )) -d 16 -s 4096 \
      -o $(( done_mib << 20 )) "$(opts)" >/dev/null 2>&1
    done_mib=$n
    sleep 0.2
    row="$row | $(( $(rss) / 1024 ))"
  done
  echo "$row |"
  stop
done
