#!/usr/bin/env bash
# Closed-loop Authorize through akashi-load against a server on its sled store and against one on
# PostgreSQL, in the same sitting (BENCHMARKS.md "The PostgreSQL store"). Starts a throwaway
# PostgreSQL cluster with the distribution's defaults (fsync on, synchronous_commit on) on a Unix
# socket, as the postgres user when run as root. Needs a release build of akashi and akashi-load:
#   cargo build --release -p akashi -p tools
# Usage: tools/bench/postgres-vs-sled.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-20}
bin=${AKASHI_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
root=$(mktemp -d /tmp/akashi-pgbench.XXXX)
chmod 755 "$root"
mkdir -p "$root/data" "$root/socket"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$root/data" "$root/socket"
as_pg "$bin/initdb" -D "$root/data" -U postgres --auth=trust -E UTF8 >/dev/null
as_pg "$bin/pg_ctl" -D "$root/data" -l "$root/data/server.log" -w \
  -o "-k $root/socket -c listen_addresses=''" start >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$root/data" -m fast stop >/dev/null; rm -rf "$root"' EXIT
as_pg "$bin/psql" -h "$root/socket" -U postgres -qc "CREATE DATABASE bench"
url="postgres:///bench?host=$root/socket&user=postgres"

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
run sled
run postgres --store "$url"
as_pg "$bin/psql" -h "$root/socket" -U postgres -d bench -Atc \
  "SELECT count(*) || ' records, ' || pg_size_pretty(pg_total_relation_size('akashi_kv')) FROM akashi_kv"
