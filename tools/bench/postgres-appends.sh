#!/usr/bin/env bash
# Durable appends at batch 1 and 1,000 on PostgreSQL against sled, in the same sitting
# (BENCHMARKS.md "Several servers on one PostgreSQL"). Starts a throwaway PostgreSQL cluster with
# the distribution's defaults (fsync on, synchronous_commit on) on a Unix socket, as the postgres
# user when run as root, and runs the ledger's `log` bench groups `append_durable_sled` and
# `append_durable_postgres` against it.
# Usage: tools/bench/postgres-appends.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/bench/pg-cluster.sh
AKASHI_BENCH_POSTGRES_URL="$url" \
  AKASHI_BENCH_ENTRIES=1000 \
  cargo bench -p ledger --features postgres --bench log -- "append_durable_(sled|postgres)/"
