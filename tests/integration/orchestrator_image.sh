#!/bin/bash
# Builds the local stand-in image scrapr-test/busybox:latest (idempotent): a
# scratch image holding Debian's static busybox and its applet symlinks, used by
# the orchestrator and docker tests as "scraper", "endpoint" and "redis" image
# (commands `httpd` / `sleep`). Machines here have no registry, so nothing is
# pulled. Needs /bin/busybox from the busybox-static package.
#   tests/integration/orchestrator_image.sh [IMAGE]   prints the image name
set -euo pipefail
IMAGE=${1:-scrapr-test/busybox:latest}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE"
    exit 0
fi
BB=${BUSYBOX:-/bin/busybox}
if ! "$BB" --list >/dev/null 2>&1 || ! file -L "$BB" 2>/dev/null | grep -q static; then
    if ! ldd "$BB" 2>&1 | grep -q 'not a dynamic'; then
        echo "orchestrator_image: $BB is not a static busybox (apt-get install busybox-static)" >&2
        exit 1
    fi
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin" "$dir/tmp" "$dir/etc" "$dir/www"
cp "$BB" "$dir/bin/busybox"
for applet in $("$BB" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$dir/bin/$applet"
done
echo 'root:x:0:0:root:/:/bin/sh' >"$dir/etc/passwd"
echo 'root:x:0:' >"$dir/etc/group"
echo ok >"$dir/www/health"
chmod 1777 "$dir/tmp"
tar -C "$dir" -cf "$dir.tar" .
docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' "$dir.tar" "$IMAGE" >/dev/null
rm -f "$dir.tar"
echo "$IMAGE"
