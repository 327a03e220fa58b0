#!/bin/sh
# The official image's template step (20-envsubst-on-templates.sh): each
# $NGINX_ENVSUBST_TEMPLATE_DIR/*.template (default /etc/nginx/templates) becomes a file of
# the same name less the suffix in $NGINX_ENVSUBST_OUTPUT_DIR (default /etc/nginx/conf.d),
# substituting only defined variables whose names match NGINX_ENVSUBST_FILTER.
set -e
if [ "$1" = nginx ]; then
  template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
  output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
  suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
  filter="${NGINX_ENVSUBST_FILTER:-}"
  defined_envs=$(printf '${%s} ' $(awk "END { for (name in ENVIRON) { print ( name ~ /${filter}/ ) ? name : \"\" } }" </dev/null))
  if [ -d "$template_dir" ]; then
    for template in "$template_dir"/*"$suffix"; do
      [ -f "$template" ] || continue
      name="$(basename "$template" "$suffix")"
      envsubst "$defined_envs" <"$template" >"$output_dir/$name"
    done
  fi
fi
exec "$@"
