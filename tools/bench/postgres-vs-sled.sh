#!/usr/bin/env bash
# Closed-loop Authorize through akashi-load against a server on its sled store, against one on
# PostgreSQL, and against two servers on one PostgreSQL database (the lease holder and a follower
# that forwards to it, one load tool on each), in the same sitting (BENCHMARKS.md "The PostgreSQL
# store", "Several servers on one PostgreSQL"). Starts a throwaway
# PostgreSQL cluster with the distribution's defaults (fsync on, synchronous_commit on) on a Unix
# socket, as the postgres user when run as root. Needs a release build of akashi and akashi-load:
#   cargo build --release -p akashi -p tools
# Usage: tools/bench/postgres-vs-sled.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-20}
source tools/bench/pg-cluster.sh

run() {
  local name=$1; shift
  local dir; dir=$(mktemp -d /tmp/akashi-bench.XXXX)
  target/release/akashi --data-dir "$dir/data" "$@" --grpc-addr 127.0.0.1:50071 \
    --http-addr 127.0.0.1:8091 --admin-addr 127.0.0.1:9191 >/dev/null 2>"$dir/stderr" &
  local pid=$!
  sleep 3
  local token; token=$(target/release/akashi token --data-dir "$dir/data" --role platform)
  echo "== $name"
  target/release/akashi-load --target http://127.0.0.1:50071 --mode authorize --token "$token" \
    --duration "$seconds" | grep -E "throughput|latency|receipts_invalid"
  curl -s 127.0.0.1:9191/metrics | grep -E '^akashi_store_(commits|round_trips)_total' || true
  echo "server CPU seconds: $(awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$pid/stat")"
  kill "$pid"; wait "$pid" || true
  rm -rf "$dir"
}
# Two servers on one database: the first takes the lease, the second (the same key files) follows
# and forwards; a load tool on each, at once.
run_two() {
  as_pg "$bin/psql" -h "$root/socket" -U postgres -qc "CREATE DATABASE bench2"
  local url2="postgres:///bench2?host=$root/socket&user=postgres"
  local one two; one=$(mktemp -d /tmp/akashi-bench.XXXX); two=$(mktemp -d /tmp/akashi-bench.XXXX)
  target/release/akashi --data-dir "$one/data" --store "$url2" --standby \
    --grpc-addr 127.0.0.1:50071 --http-addr 127.0.0.1:8091 --admin-addr 127.0.0.1:9191 \
    >/dev/null 2>"$one/stderr" &
  local pid1=$!
  sleep 3
  mkdir -p "$two/data"
  cp "$one"/data/*.key "$one"/data/*.skey "$one"/data/*.vkey "$two/data/"
  target/release/akashi --data-dir "$two/data" --store "$url2" --standby \
    --grpc-addr 127.0.0.1:50072 --http-addr 127.0.0.1:8092 --admin-addr 127.0.0.1:9192 \
    >/dev/null 2>"$two/stderr" &
  local pid2=$!
  until curl -s 127.0.0.1:9192/readyz | grep -q following; do sleep 0.2; done
  local token; token=$(target/release/akashi token --data-dir "$one/data" --role platform)
  echo "== two servers on postgres (through the lease holder | through the follower)"
  local loads=()
  for port in 50071 50072; do
    target/release/akashi-load --target "http://127.0.0.1:$port" --mode authorize \
      --token "$token" --duration "$seconds" --connections 2 >"$one/load-$port" 2>&1 &
    loads+=($!)
  done
  wait "${loads[@]}"
  grep -hE "throughput|latency|receipts_invalid" "$one/load-50071" | sed 's/^/  leader   /'
  grep -hE "throughput|latency|receipts_invalid" "$one/load-50072" | sed 's/^/  follower /'
  curl -s 127.0.0.1:9192/metrics | grep -E '^akashi_follower_(forwarded|forward_failures)_total'
  echo "server CPU seconds: leader $(awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$pid1/stat"), follower $(awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$pid2/stat")"
  kill "$pid2" "$pid1"; wait "$pid2" "$pid1" || true
  rm -rf "$one" "$two"
}
run sled
run postgres --store "$url"
run_two
as_pg "$bin/psql" -h "$root/socket" -U postgres -d bench -Atc \
  "SELECT count(*) || ' records, ' || pg_size_pretty(pg_total_relation_size('akashi_kv')) FROM akashi_kv"
