#!/usr/bin/env bash
# Instructions the server executes per call, counted by valgrind's callgrind: a measure of CPU
# per decision that does not drift with the machine's load or clock (use it where `perf stat -e
# instructions` is not available, as on VMs without a PMU). Calls run one at a time, so each
# Authorize is a batch of one: the figure is the per-call cost at low rates.
#
# usage: tools/bench/instructions-per-call.sh [authorize|health] [CALLS] [BINDIR]
#   BINDIR holds release builds of `akashi` and `akashi-load` (default target/release).
# Two windows are counted on one server, CALLS and 3 x CALLS calls after the same warm-up;
# their difference over 2 x CALLS calls is the figure, so the load tool's per-run setup (its
# patients and consents) cancels out. Needs valgrind (Debian: apt-get install valgrind).
set -euo pipefail
mode=${1:-authorize}
calls=${2:-200}
bin=${3:-target/release}
grpc=127.0.0.1:50071
http=127.0.0.1:8097
dir=$(mktemp -d)
trap 'kill "${server:-}" 2>/dev/null && wait "${server:-}" 2>/dev/null; rm -rf "$dir"' EXIT

# A first, uninstrumented start creates the data dir's keys.
"$bin/akashi" --data-dir "$dir/data" --grpc-addr $grpc --http-addr $http >"$dir/first.log" 2>&1 &
server=$!
for _ in $(seq 100); do [ -f "$dir/data/token-issuer.key" ] && break; sleep 0.2; done
sleep 1
kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true
token=$("$bin/akashi" token --data-dir "$dir/data" --role platform)

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/cg.out" \
  "$bin/akashi" --data-dir "$dir/data" --grpc-addr $grpc --http-addr $http >"$dir/server.log" 2>&1 &
server=$!
load() {
  "$bin/akashi-load" --mode "$mode" --target "http://$grpc" --token "$token" --patients 50 \
    --connections 1 --in-flight 1 --verify-every 0 --requests "$1"
}
for _ in $(seq 120); do load 1 >/dev/null 2>&1 && break; sleep 1; done
load 50 >/dev/null
callgrind_control -i on "$server" >/dev/null 2>&1
load "$calls" >/dev/null
callgrind_control -d "$server" >/dev/null 2>&1   # cg.out.1
callgrind_control -z "$server" >/dev/null 2>&1
load $((calls * 3)) >/dev/null
callgrind_control -d "$server" >/dev/null 2>&1   # cg.out.2
callgrind_control -i off "$server" >/dev/null 2>&1
sleep 1
total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'; }
small=$(total "$dir/cg.out.1")
large=$(total "$dir/cg.out.2")
echo "$mode: $small instructions for $calls calls, $large for $((calls * 3));" \
  "$(( (large - small) / (calls * 2) )) per call"
