# Counts the sequencer's `slow batch` debug events (ledger::slow_batch: batches over 25 ms) by
# the phase that took longest, from a server's log with colours stripped. Lines up to `from`
# (default 0) are skipped, so one log can be read phase by phase. Used by burst-tail.sh and
# map-write-out-tail.sh.
/slow batch/ && ++seen > from {
  delete v
  for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  big = "waited"; most = v["waited"]
  n = split("apply seal stage commit sync anchor", phase, " ")
  for (j = 1; j <= n; j++) if (v[phase[j]] + 0 > most + 0) { most = v[phase[j]]; big = phase[j] }
  count[big]++; all++
}
END { printf "batches over 25 ms: %d, by longest phase:", all; for (k in count) printf " %s %d", k, count[k]; print "" }
