#!/usr/bin/env bash
# `make images`: every image compose.yaml runs, built on a site that cannot pull from an
# image registry. Only Debian's package mirror and PyPI are needed (through a proxy if the
# site has one):
#   1. a Debian base from debootstrap, imported once per machine (kept while it exists);
#   2. Python, nginx, PostgreSQL, Redis and Prometheus from Debian packages on it, each with
#      the entry point behaviour compose.yaml relies on (deploy/images/<name>/);
#   3. scimbus itself from deploy/Dockerfile on the Python image;
# then records their names in .env (SCIM_IMAGE, SCIM_REDIS_IMAGE, …), so a plain
# `docker compose up -d` runs them. Docker's layer cache makes a second run take seconds.
#
#   SCIM_CA_BUNDLE   extra CA bundle (PEM) pip trusts in the scimbus build, for a
#                    TLS-inspecting proxy; default: the host's bundle when it exists
#   DEBIAN_MIRROR    default: the first mirror this host's apt uses, else deb.debian.org
#   IMAGE_PREFIX     name of the local images (default scimbus-local/); official names are
#                    never reused
#   SCIM_IMAGE       name of the scimbus image (default scimbus:0.1.0)
#   ENV_FILE         where the names are recorded (default .env; "-" records nothing)
set -euo pipefail
cd "$(dirname "$0")/../.."

prefix="${IMAGE_PREFIX:-scimbus-local/}"
suite=bookworm
base="${prefix}debian:$suite"
python_image="${prefix}python:3.11-$suite"
scim_image="${SCIM_IMAGE:-scimbus:0.1.0}"
env_file="${ENV_FILE:-.env}"
ca_bundle="${SCIM_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
[ -f "$ca_bundle" ] || ca_bundle=""

host_mirror() {
  # deb822 (URIs:) or one-line (deb URL suite …) sources; the first plain Debian archive.
  cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | sed -n -E 's#^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)(https?://[^[:space:]]+/debian)/?([[:space:]].*)?$#\3#p' \
    | head -n1 || true
}
mirror="${DEBIAN_MIRROR:-$(host_mirror)}"
mirror="${mirror:-http://deb.debian.org/debian}"

build_base() {
  if docker image inspect "$base" >/dev/null 2>&1; then
    return
  fi
  command -v debootstrap >/dev/null || { echo "images: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  local root
  root="$(mktemp -d)"
  trap 'rm -rf "$root"' RETURN
  echo "images: debootstrap $suite from $mirror (once per machine)"
  debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; exit 1; }
  rm -f "$root.log"
  # What Debian's own container images do: no recommends, no cache or docs kept.
  cat >"$root/etc/apt/apt.conf.d/90container" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
EOF
  cat >"$root/etc/dpkg/dpkg.cfg.d/90container" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
  # As in Debian's container images: packages installed in a build start no service.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  printf 'deb %s %s main\ndeb %s %s-updates main\n' "$mirror" "$suite" "$mirror" "$suite" >"$root/etc/apt/sources.list"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
         "$root"/usr/share/man/* "$root"/usr/share/locale/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$base" >/dev/null
}

build_base
# The rest in one compose build (BuildKit: cached layers, the CA bundle as a build secret).
export IMAGE_PREFIX="$prefix" SCIM_IMAGE="$scim_image" SCIM_CA_BUNDLE="$ca_bundle"
echo "images: building $python_image, ${prefix}{nginx,postgres,redis,prometheus} and $scim_image"
docker compose -f deploy/images/compose.yaml build ${IMAGES_BUILD_ARGS:-}

record() {  # record NAME VALUE: set NAME in the env file, keeping every other line
  local name="$1" value="$2"
  touch "$env_file"
  if grep -q "^$name=" "$env_file"; then
    sed -i "s#^$name=.*#$name=$value#" "$env_file"
  else
    printf '%s=%s\n' "$name" "$value" >>"$env_file"
  fi
}
if [ "$env_file" != - ]; then
  record SCIM_IMAGE "$scim_image"
  record SCIM_NGINX_IMAGE "${prefix}nginx:1.22"
  record SCIM_POSTGRES_IMAGE "${prefix}postgres:15"
  record SCIM_REDIS_IMAGE "${prefix}redis:7.0"
  record SCIM_PROMETHEUS_IMAGE "${prefix}prometheus:2.42"
  # Grafana has no Debian package: where its image is not at hand, its profile goes off.
  grafana="$(sed -n 's/^SCIM_GRAFANA_IMAGE=//p' "$env_file" | tail -n1)"
  grafana="${grafana:-grafana/grafana:11.6.1}"
  if ! docker image inspect "$grafana" >/dev/null 2>&1; then
    profiles="$(sed -n 's/^COMPOSE_PROFILES=//p' "$env_file" | tail -n1)"
    record COMPOSE_PROFILES "$(printf '%s' "$profiles" | tr ',' '\n' | { grep -vx grafana || true; } | paste -sd, -)"
    echo "images: no $grafana here, so Grafana's profile is off (docker load it, then add grafana to COMPOSE_PROFILES)"
  fi
  echo "images: recorded in $env_file"
fi
