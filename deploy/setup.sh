#!/usr/bin/env bash
# Set-up of a fresh Debian/Ubuntu machine for `make run` and `make test`: system packages
# (when root and missing), the virtualenv and the pinned Python packages. Idempotent.
#   deploy/setup.sh run    → redis-server, nginx, python venv + runtime packages
#   deploy/setup.sh test   → the above + PostgreSQL binaries + test packages
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
