#!/bin/sh
# Runs once, when the primary's data folder is created (docker-entrypoint-initdb.d): lets the
# replica stream the WAL with the same password-checked user. Kept: 10 GB of WAL for a replica
# that was away (it re-clones with pg_basebackup past that).
set -eu
echo "host replication ${POSTGRES_USER} all scram-sha-256" >> "$PGDATA/pg_hba.conf"
cat >> "$PGDATA/postgresql.conf" <<CONF
wal_level = replica
max_wal_senders = 10
wal_keep_size = 10GB
hot_standby = on
CONF
