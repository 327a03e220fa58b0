#!/bin/sh
# As the official image's entry point: options alone mean redis-server; as root, own /data and
# drop to the redis user. No config file is read, so it listens on every address, and protected
# mode is off as in the official build (compose.yaml sets a password).
set -e
case "$1" in
  -*|*.conf) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ]; then
  shift
  set -- redis-server --protected-mode no "$@"
  if [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
umask 0077
exec "$@"
