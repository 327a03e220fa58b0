#!/bin/sh
# A Redis Sentinel of compose.ha.yaml: writes its own config (sentinels rewrite it as they
# learn the topology, so it lives in the container's volume, not in a read-only mount) and
# runs. The data nodes' password comes from the environment, never from a file in git.
set -eu
conf=/data/sentinel.conf
if [ ! -s "$conf" ]; then
  cat > "$conf" <<CONF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel monitor scimbus ${SCIM_REDIS_PRIMARY_HOST:-redis} 6379 2
sentinel auth-pass scimbus ${REDIS_PASSWORD}
sentinel down-after-milliseconds scimbus ${SCIM_SENTINEL_DOWN_AFTER_MS:-5000}
sentinel failover-timeout scimbus 60000
sentinel parallel-syncs scimbus 1
CONF
fi
exec redis-server "$conf" --sentinel
