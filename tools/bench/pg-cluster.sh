# Sourced by the PostgreSQL benchmark scripts: starts a throwaway PostgreSQL cluster with the
# distribution's defaults (fsync on, synchronous_commit on) on a Unix socket, as the postgres user
# when run as root, creates the database `bench`, and stops and deletes the cluster on exit.
# Sets: bin (the server binaries), root (the cluster's folder), url (the database), as_pg (runs a
# command as the cluster's owner).
bin=${AKASHI_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}
root=$(mktemp -d /tmp/akashi-pgbench.XXXX)
chmod 755 "$root"
mkdir -p "$root/data" "$root/socket"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$root/data" "$root/socket"; fi
as_pg "$bin/initdb" -D "$root/data" -U postgres --auth=trust -E UTF8 >/dev/null
as_pg "$bin/pg_ctl" -D "$root/data" -l "$root/data/server.log" -w \
  -o "-k $root/socket -c listen_addresses=''" start >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$root/data" -m fast stop >/dev/null; rm -rf "$root"' EXIT
as_pg "$bin/psql" -h "$root/socket" -U postgres -qc "CREATE DATABASE bench"
url="postgres:///bench?host=$root/socket&user=postgres"
