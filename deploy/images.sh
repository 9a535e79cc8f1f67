#!/bin/sh
# Builds every scrapr image locally (no registry needed):
#   scrapr/{build,runtime} (shared stages), scrapr/{scraper,datasource,endpoint,
#   config-discovery,orchestrator}, scrapr/{redis,consul,mongo,demo-site}.
# Usage: deploy/images.sh [image...]   (default: all)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D="$ROOT/deploy/docker"
export DOCKER_BUILDKIT=0
"$ROOT/deploy/base-image.sh"

build() { # build TAG DOCKERFILE CONTEXT
    echo "images: building $1"
    if ! docker build -t "$1:latest" -f "$2" "$3" >"$ctx.log" 2>&1; then
        tail -30 "$ctx.log" >&2
        echo "images: building $1 failed" >&2
        exit 1
    fi
}

ctx=$(mktemp -d /tmp/scrapr-ctx.XXXXXX)
trap 'rm -rf "$ctx" "$ctx.log"' EXIT
want=${*:-"build runtime scraper datasource endpoint config-discovery orchestrator redis consul mongo demo-site"}
for img in $want; do
    case $img in
    build) build scrapr/build "$D/build.Dockerfile" "$ROOT" ;;
    runtime) build scrapr/runtime "$D/runtime.Dockerfile" "$D" ;;
    scraper | datasource | endpoint | config-discovery | orchestrator)
        build "scrapr/$img" "$D/$img.Dockerfile" "$D" ;;
    redis) build scrapr/redis "$D/redis.Dockerfile" "$D" ;;
    node) build scrapr/node "$D/node.Dockerfile" "$D" ;;
    consul | mongo)
        bin=consul
        [ "$img" = mongo ] && bin=ferretdb
        [ -x "$ROOT/tools/bin/$bin" ] || "$ROOT/scripts/deps.sh"
        rm -rf "${ctx:?}"/*
        cp "$ROOT/tools/bin/$bin" "$ctx/"
        build "scrapr/$img" "$D/$img.Dockerfile" "$ctx" ;;
    demo-site)
        rm -rf "${ctx:?}"/*
        cp -r "$ROOT/deploy/demo-site/site" "$ROOT/deploy/demo-site/nginx.conf" "$ctx/"
        build scrapr/demo-site "$D/demo-site.Dockerfile" "$ctx" ;;
    *) echo "images: unknown image $img" >&2; exit 2 ;;
    esac
done
