#!/usr/bin/env bash
# The latency tail right after a saturation burst (#21): on a fresh server, Authorize at a fixed
# rate, then a closed-loop burst, then the same rate again, with per-interval latency from the
# load tool and, after each phase, the batches that took over 25 ms by the phase that took longest
# (the sequencer's `slow batch` debug events). BENCHMARKS.md “The tail after a burst, by phase”. Needs release builds: cargo build --release -p akashi -p tools
# Usage: tools/bench/burst-tail.sh [BUILD] [RATE] [SECONDS] [BURST_SECONDS] [PATIENTS]
# (NO_BURST=1 runs three times the burst's length at RATE instead: as large a log, no burst.)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-target/release} rate=${2:-4700} seconds=${3:-20} burst=${4:-15} patients=${5:-1000}
load=target/release/akashi-load
dir=$(mktemp -d /tmp/akashi-burst.XXXX)
AKASHI_LOG=info,ledger::slow_batch=debug "$build/akashi" --data-dir "$dir/data" \
  --grpc-addr 127.0.0.1:50075 --http-addr 127.0.0.1:8095 --admin-addr 127.0.0.1:9195 \
  >/dev/null 2>"$dir/stderr" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf 127.0.0.1:8095/checkpoint >/dev/null && break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && curl -sf 127.0.0.1:8095/checkpoint >/dev/null ||
  { echo "the server did not start (ports 50075, 8095, 9195 busy?):" >&2; tail -5 "$dir/stderr" >&2; exit 1; }
token=$("$build/akashi" token --data-dir "$dir/data" --role platform)
slow() {
  sed 's/\x1b\[[0-9;]*m//g' "$dir/stderr" | awk -v from="$1" -f tools/bench/slow-batches.awk
}
# The server's batch counters: count, then the sums of batch, writer and sync seconds, and entries.
counters() {
  curl -s 127.0.0.1:9195/metrics | awk '
    /^akashi_ledger_batch_duration_seconds_count/ { n = $2 }
    /^akashi_ledger_batch_duration_seconds_sum/ { d = $2 }
    /^akashi_ledger_batch_write_seconds_sum/ { w = $2 }
    /^akashi_ledger_sync_duration_seconds_sum/ { y = $2 }
    /^akashi_ledger_batch_entries_sum/ { e = $2 }
    /^akashi_grpc_request_duration_seconds_bucket\{method="akashi.v1.AccessService\/Authorize",le="0.005"\}/ { c5 = $2 }
    /^akashi_grpc_request_duration_seconds_bucket\{method="akashi.v1.AccessService\/Authorize",le="0.01"\}/ { c10 = $2 }
    /^akashi_grpc_request_duration_seconds_count\{method="akashi.v1.AccessService\/Authorize"\}/ { c = $2 }
    /^akashi_authorize_phase_seconds_bucket\{phase="prepare",le="0.005"\}/ { p5 = $2 }
    /^akashi_authorize_phase_seconds_sum\{phase="prepare"\}/ { ps = $2 }
    /^akashi_authorize_phase_seconds_count\{phase="prepare"\}/ { pc = $2 }
    /^akashi_authorize_phase_seconds_bucket\{phase="sequenced",le="0.005"\}/ { q5 = $2 }
    /^akashi_authorize_phase_seconds_sum\{phase="sequenced"\}/ { qs = $2 }
    /^akashi_authorize_phase_seconds_count\{phase="sequenced"\}/ { qc = $2 }
    END { print n + 0, d + 0, w + 0, y + 0, e + 0, c + 0, c5 + 0, c10 + 0, p5 + 0, ps + 0, pc + 0, q5 + 0, qs + 0, qc + 0 }'
}
# Means per batch between two `counters` lines.
means() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    split(a, x, " "); split(b, y, " "); n = y[1] - x[1]
    if (n <= 0) { print "no batches"; exit }
    printf "per batch: %.1f entries, %.0f µs in all, writer %.0f µs, syncs %.0f µs (%d batches)\n",
      (y[5] - x[5]) / n, (y[2] - x[2]) / n * 1e6, (y[3] - x[3]) / n * 1e6, (y[4] - x[4]) / n * 1e6, n
    calls = y[6] - x[6]
    if (calls > 0) printf "Authorize as the server timed it: %.2f %% over 5 ms, %.2f %% over 10 ms\n",
      (calls - (y[7] - x[7])) * 100 / calls, (calls - (y[8] - x[8])) * 100 / calls
    pc = y[11] - x[11]; qc = y[14] - x[14]
    if (pc > 0 && qc > 0) printf "  before the writer: mean %.0f µs, %.2f %% over 5 ms; through it: mean %.0f µs, %.2f %% over 5 ms\n",
      (y[10] - x[10]) / pc * 1e6, (pc - (y[9] - x[9])) * 100 / pc, (y[13] - x[13]) / qc * 1e6, (qc - (y[12] - x[12])) * 100 / qc }'
}
seen() { sed 's/\x1b\[[0-9;]*m//g' "$dir/stderr" | { grep -c "slow batch" || true; }; }
phase() {
  local name=$1 connections=$2 in_flight=$3; shift 3
  local before; before=$(seen)
  local start; start=$(counters)
  echo "== $name"
  if ! "$load" --target http://127.0.0.1:50075 --mode authorize --token "$token" --server-pid "$pid" \
    --patients "$patients" --write-percent 0 --connections "$connections" --in-flight "$in_flight" \
    "$@" >"$dir/load.out" 2>&1; then
    cat "$dir/load.out" >&2
    echo "the load run failed: its figures are not a result" >&2
    exit 1
  fi
  grep -vE "^(setup|target|mode)" "$dir/load.out" || true
  means "$start" "$(counters)"
  slow "$before"
}
phase "fresh, $rate/s" 4 16 --rate "$rate" --duration "$seconds" --interval 5
if [ "${NO_BURST:-}" = 1 ]; then
  # The same number of entries or so at the fixed rate instead: a larger log, no burst.
  phase "instead of the burst, $rate/s" 4 16 --rate "$rate" --duration $((burst * 3))
else
  phase "burst, closed loop" 8 64 --duration "$burst"
fi
phase "right after, $rate/s" 4 16 --rate "$rate" --duration "$seconds" --interval 5
