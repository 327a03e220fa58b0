#!/bin/bash
# The parts of the official image's entry point compose.yaml relies on: a first start on an
# empty $PGDATA runs initdb (superuser POSTGRES_USER with POSTGRES_PASSWORD, UTF-8), creates
# POSTGRES_DB, runs /docker-entrypoint-initdb.d/*.sql and *.sh on a server reachable only
# through its socket, then serves on every address with password authentication.
set -euo pipefail
if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?the postgres image needs POSTGRES_PASSWORD}"
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") --encoding=UTF8 \
         --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 ${POSTGRES_INITDB_ARGS:-} >/dev/null
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  psql=(psql -v ON_ERROR_STOP=1 --username "$user" --no-password --dbname postgres)
  if [ "$db" != postgres ]; then
    "${psql[@]}" -q -c "CREATE DATABASE \"$db\""
  fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "initdb: running $f"; . "$f" ;;
      *.sql) echo "initdb: running $f"; "${psql[@]}" --dbname "$db" -q -f "$f" ;;
      *.sql.gz) echo "initdb: running $f"; gunzip -c "$f" | "${psql[@]}" --dbname "$db" -q ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo "initdb: PostgreSQL init process complete; ready for start up."
fi
if [ "$1" = postgres ]; then
  shift
  set -- postgres -c listen_addresses='*' "$@"
fi
exec "$@"
