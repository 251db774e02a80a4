#!/usr/bin/env bash
# Durable appends at batch 1 and 1,000 on PostgreSQL against sled, in the same sitting
# (BENCHMARKS.md "Several servers on one PostgreSQL"). Starts a throwaway PostgreSQL cluster with
# the distribution's defaults (fsync on, synchronous_commit on) on a Unix socket, as the postgres
# user when run as root, and runs the ledger's `log` bench groups `append_durable_sled` and
# `append_durable_postgres` against it.
# Usage: tools/bench/postgres-appends.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
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
AKASHI_BENCH_POSTGRES_URL="postgres:///bench?host=$root/socket&user=postgres" \
  AKASHI_BENCH_ENTRIES=1000 \
  cargo bench -p ledger --features postgres --bench log -- "append_durable_(sled|postgres)/"
