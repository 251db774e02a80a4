#!/usr/bin/env bash
# Server CPU per decision at fixed offered rates, akashi beside cedar-agent (a Cedar service
# that logs nothing), in one run on one machine: the comparison of issue #21.
#
# usage: tools/bench/cedar-agent.sh [BINDIR] [CEDAR_AGENT] [SECONDS]
#   BINDIR       release builds of `akashi` and `akashi-load` (default target/release)
#   CEDAR_AGENT  the cedar-agent binary (default: `cedar-agent` on PATH; install it outside the
#                workspace with `cargo install cedar-agent --root DIR`)
#   SECONDS      length of each measured run (default 15)
# Environment: RATES (default "500 1000 3000 6000"), PATIENTS (default 1000).
#
# akashi runs on the embedded default (sled in a fresh data dir, the subject map on) and is
# asked the `authorize` workload's decisions with no consent writes (`--write-percent 0`);
# Health/Check at the same rates is the floor of a gRPC call. cedar-agent is asked the same
# decisions, under akashi's default rules rewritten for Cedar 2.x
# (tools/bench/cedar-agent/policies.cedar), with the consent facts in each request's context;
# the load tool checks every cedar-agent answer against akashi's decision. Server CPU is user +
# system time of the server process over the measured calls (setup excluded), per call.
# Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release}
agent=${2:-cedar-agent}
secs=${3:-15}
rates=${RATES:-"500 1000 3000 6000"}
patients=${PATIENTS:-1000}
grpc=127.0.0.1:50073
http=127.0.0.1:8099
admin=127.0.0.1:9099
agent_port=8183
dir=$(mktemp -d)
cleanup() {
  for pid in ${server:-} ${peer:-}; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  rm -rf "$dir"
}
trap cleanup EXIT

"$bin/akashi" --data-dir "$dir/data" --grpc-addr $grpc --http-addr $http --admin-addr $admin \
  >"$dir/akashi.log" 2>&1 &
server=$!
for _ in $(seq 150); do
  "$bin/akashi-load" --mode health --target http://$grpc --requests 1 >/dev/null 2>&1 && break
  sleep 0.2
done
token=$("$bin/akashi" token --data-dir "$dir/data" --role platform)

"$agent" --addr 127.0.0.1 --port $agent_port --log-level error >"$dir/agent.log" 2>&1 &
peer=$!
for _ in $(seq 150); do
  curl -fs -o /dev/null "http://127.0.0.1:$agent_port/v1/policies" && break
  sleep 0.2
done

run() { # name, pid, args...: one measured run, its JSON report saved as $dir/name.json
  local name=$1 pid=$2
  shift 2
  "$bin/akashi-load" "$@" --duration "$secs" --server-pid "$pid" --json >"$dir/$name.json"
}

# Warm both servers (and set akashi's patients up) before the first measured run.
run warm-akashi $server --mode authorize --target http://$grpc --token "$token" \
  --patients "$patients" --write-percent 0 --rate 1000
run warm-peer $peer --mode cedar-agent --target http://127.0.0.1:$agent_port \
  --cedar-policies tools/bench/cedar-agent/policies.cedar --patients "$patients" --rate 1000

for rate in $rates; do
  run "akashi-$rate" $server --mode authorize --target http://$grpc --token "$token" \
    --patients "$patients" --write-percent 0 --rate "$rate"
  run "health-$rate" $server --mode health --target http://$grpc --rate "$rate"
  run "peer-$rate" $peer --mode cedar-agent --target http://127.0.0.1:$agent_port \
    --cedar-policies tools/bench/cedar-agent/policies.cedar --patients "$patients" --rate "$rate"
done

cpu() { jq -r '.server_cpu.micros_per_call | floor' "$dir/$1.json"; }
p99() { jq -r '(.latency_us.p99 / 1000 * 100 | floor) / 100' "$dir/$1.json"; }
errors() { jq -r '[.errors[]] | add // 0' "$dir/$1.json"; }
echo "| offered rate | akashi Authorize: CPU per call (p99 ms) | cedar-agent: CPU per decision (p99 ms) | akashi / cedar-agent | Health/Check: CPU per call | Authorize / Health | errors (akashi, peer) |"
echo "|---|---|---|---|---|---|---|"
for rate in $rates; do
  a=$(cpu "akashi-$rate"); c=$(cpu "peer-$rate"); h=$(cpu "health-$rate")
  printf '| %s/s | %s µs (%s) | %s µs (%s) | %s × | %s µs | %s × | %s, %s |\n' \
    "$rate" "$a" "$(p99 "akashi-$rate")" "$c" "$(p99 "peer-$rate")" \
    "$(echo "scale=2; $a / $c" | bc)" "$h" "$(echo "scale=2; $a / $h" | bc)" \
    "$(errors "akashi-$rate")" "$(errors "peer-$rate")"
done
