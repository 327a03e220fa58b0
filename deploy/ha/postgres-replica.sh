#!/bin/sh
# The PostgreSQL streaming replica of compose.ha.yaml: on first start, clone the primary
# (pg_basebackup -R writes standby.signal and the primary's connection), then run as a
# hot standby that the reader reads (SCIM_READ_DATABASE_URL).
set -eu
export PGPASSWORD="$POSTGRES_PASSWORD"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h "${SCIM_PG_PRIMARY_HOST:-postgres}" -U "$POSTGRES_USER" -d "$POSTGRES_DB"; do sleep 1; done
  rm -rf "${PGDATA:?}"/*
  pg_basebackup -h "${SCIM_PG_PRIMARY_HOST:-postgres}" -U "$POSTGRES_USER" -D "$PGDATA" -R -X stream --checkpoint=fast
  chmod 700 "$PGDATA"
fi
exec postgres -c hot_standby=on -c hot_standby_feedback=on
