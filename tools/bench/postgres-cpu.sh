#!/usr/bin/env bash
# Server CPU per Authorize at fixed offered rates (1,000, 3,000, 6,000/s) on the sled store and
# on PostgreSQL, counting akashi's process and, for PostgreSQL, every postgres process too
# (BENCHMARKS.md "The PostgreSQL store"). A throwaway cluster with the distribution's defaults;
# run as root (the cluster runs as the postgres user). Needs:
#   cargo build --release -p akashi -p tools
# Prints clock ticks (1/100 s) of CPU over a 20 s run at each rate.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${AKASHI_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
R=$(mktemp -d /tmp/pgcpu.XXXX); chmod 755 $R; mkdir -p $R/data $R/sock; chown -R postgres:postgres $R/data $R/sock
runuser -u postgres -- $B/initdb -D $R/data -U postgres --auth=trust -E UTF8 >/dev/null
runuser -u postgres -- $B/pg_ctl -D $R/data -l $R/data/log -w -o "-k $R/sock -c listen_addresses=''" start >/dev/null
pgticks() { local t=0; for p in $(pgrep -x postgres); do t=$((t + $(awk '{print $14+$15}' /proc/$p/stat 2>/dev/null || echo 0))); done; echo $t; }
run() {
  name=$1; rate=$2; shift 2
  D=$(mktemp -d /tmp/akc.XXXX)
  target/release/akashi --data-dir $D/data "$@" --grpc-addr 127.0.0.1:50071 --http-addr 127.0.0.1:8091 --admin-addr 127.0.0.1:9191 >/dev/null 2>$D/err &
  pid=$!; sleep 3; if ! kill -0 $pid; then cat $D/err; exit 1; fi
  TOKEN=$(target/release/akashi token --data-dir $D/data --role platform)
  # A short run sets up the workload's patients; the second is measured.
  target/release/akashi-load --target http://127.0.0.1:50071 --mode authorize --token "$TOKEN" --duration 3 --rate $rate >/dev/null
  a0=$(awk '{print $14+$15}' /proc/$pid/stat); p0=$(pgticks)
  out=$(target/release/akashi-load --target http://127.0.0.1:50071 --mode authorize --token "$TOKEN" --duration 20 --rate $rate)
  a1=$(awk '{print $14+$15}' /proc/$pid/stat); p1=$(pgticks)
  echo "== $name @ $rate/s: $(echo "$out" | grep -E "throughput|latency" | tr '\n' ' ')"
  echo "   akashi ticks $((a1-a0)), postgres ticks $((p1-p0)), offered $((rate * 20)) calls"
  kill $pid; wait $pid || true; rm -rf $D
}
for rate in 1000 3000 6000; do
  run sled $rate
  runuser -u postgres -- $B/psql -h $R/sock -U postgres -qc "CREATE DATABASE bench$rate"
  run postgres $rate --store "postgres:///bench$rate?host=$R/sock&user=postgres"
done
runuser -u postgres -- $B/pg_ctl -D $R/data -m fast stop >/dev/null; rm -rf $R
