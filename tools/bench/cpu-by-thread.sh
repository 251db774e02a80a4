#!/usr/bin/env bash
# CPU time of a process's threads over an interval, summed by thread name (user + system, from
# /proc/PID/task/*/stat; Linux). Run it beside a fixed-rate load to see which threads a call's
# server CPU goes to (tokio workers, the sequencer's writer, sled's and the syncer's threads).
#
# usage: tools/bench/cpu-by-thread.sh PID SECONDS [CALLS]
#   With CALLS (the calls made in the interval), also prints microseconds per call.
set -euo pipefail
pid=$1
secs=$2
calls=${3:-}
hz=$(getconf CLK_TCK)
snapshot() { # thread name (with spaces as _) and utime+stime ticks, one line per thread
  for stat in /proc/"$pid"/task/*/stat; do
    # The name is in parentheses and may hold spaces: split around the last ')'.
    line=$(cat "$stat" 2>/dev/null) || continue
    name=${line#*(}; name=${name%)*}; rest=${line##*) }
    set -- $rest
    echo "${stat%/stat} ${name// /_} $(( ${12} + ${13} ))"
  done
}
before=$(snapshot)
sleep "$secs"
after=$(snapshot)
join <(sort <<<"$before") <(sort <<<"$after") |
  awk -v hz="$hz" -v secs="$secs" -v calls="$calls" '
    { by[$2] += ($5 - $3) }
    END {
      for (n in by) {
        s = by[n] / hz
        if (calls != "") printf "%-24s %8.2f s  %6.1f %% of a core  %8.1f us/call\n", n, s, 100 * s / secs, s * 1e6 / calls
        else printf "%-24s %8.2f s  %6.1f %% of a core\n", n, s, 100 * s / secs
      }
    }' | sort -k2 -rn
