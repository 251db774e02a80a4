#!/usr/bin/env bash
# The latency tail the subject map's write-outs cause on the gRPC path: Authorize through
# akashi-load over many patients, closed loop and then open loop at a fixed rate, against two
# builds of akashi in alternation, each round on a fresh data dir (BENCHMARKS.md "Write-outs a
# chunk per batch"). Prints each run's throughput and latency lines, the server's batches that
# took over 25 and over 100 ms, and its completed write-outs. Needs release builds of akashi (in each
# BUILD directory) and of akashi-load (this checkout's target/release):
#   cargo build --release -p akashi -p tools
# Usage: tools/bench/map-write-out-tail.sh BUILD_A BUILD_B [PATIENTS] [SECONDS] [RATE] [ROUNDS]
# (MODES="open" runs the open loop only; the default is "closed open".)
set -euo pipefail
cd "$(dirname "$0")/../.."
a=$1 b=$2 patients=${3:-100000} seconds=${4:-20} rate=${5:-6000} rounds=${6:-2}
load=target/release/akashi-load
pid=
# A run cut short leaves no server holding the ports.
trap '[ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }' EXIT

run() {
  local build=$1 mode=$2
  local dir; dir=$(mktemp -d /tmp/akashi-tail.XXXX)
  AKASHI_LOG=info,ledger::slow_batch=debug "$build/akashi" --data-dir "$dir/data" --grpc-addr 127.0.0.1:50072 \
    --http-addr 127.0.0.1:8092 --admin-addr 127.0.0.1:9192 >/dev/null 2>"$dir/stderr" &
  pid=$!
  for _ in $(seq 100); do curl -sf 127.0.0.1:8092/checkpoint >/dev/null && break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && curl -sf 127.0.0.1:8092/checkpoint >/dev/null ||
    { echo "the server did not start (ports 50072, 8092, 9192 busy?)" >&2; exit 1; }
  local token; token=$("$build/akashi" token --data-dir "$dir/data" --role platform)
  local pace=()
  [ "$mode" = open ] && pace=(--rate "$rate")
  echo "== $build $mode"
  "$load" --target http://127.0.0.1:50072 --mode authorize --token "$token" --server-pid "$pid" \
    --patients "$patients" --duration "$seconds" --connections 8 --in-flight 64 "${pace[@]}" |
    grep -E "throughput|latency|errors|receipts_invalid|cpu" || true
  curl -s 127.0.0.1:9192/metrics | awk '
    /^akashi_ledger_batch_duration_seconds_bucket\{le="0.025"\}/ { quick = $2 }
    /^akashi_ledger_batch_duration_seconds_bucket\{le="0.1"\}/ { fast = $2 }
    /^akashi_ledger_batch_duration_seconds_count/ { all = $2 }
    /^akashi_ledger_batch_write_seconds_bucket\{le="0.01"\}/ { w10 = $2; wseen = 1 }
    /^akashi_subject_map_write_outs_total/ { outs = $2 }
    END { printf "batches %d, over 25 ms: %d, over 100 ms: %d; writer over 10 ms: %s; write-outs completed: %d\n", all, all - quick, all - fast, wseen ? all - w10 : "?", outs }'
  sed 's/\x1b\[[0-9;]*m//g' "$dir/stderr" | awk -f tools/bench/slow-batches.awk
  kill "$pid"; wait "$pid" || true
  pid=
  rm -rf "$dir"
}
for _ in $(seq "$rounds"); do
  for mode in ${MODES:-closed open}; do
    for build in "$a" "$b"; do run "$build" "$mode"; done
  done
done
