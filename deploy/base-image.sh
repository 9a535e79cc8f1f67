#!/bin/sh
# Makes sure the image debian:bookworm-slim exists locally, so the same
# Dockerfiles build on machines without an image registry: use it if present,
# else try to pull it, else build it with debootstrap (minbase) from this
# machine's own Debian mirror and `docker import` it, leaving out apt lists,
# docs, man pages and locales.
set -eu
IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi
if timeout 60 docker pull "$IMAGE" >/dev/null 2>&1; then
    echo "base-image: pulled $IMAGE"
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || {
    echo "base-image: debootstrap is missing (run scripts/deps.sh)" >&2
    exit 1
}
mirror=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -v -- '-security' | grep -i debian | head -1 \
    | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*$//')
[ -n "$mirror" ] || { echo "base-image: no Debian mirror in the apt configuration" >&2; exit 1; }
root=$(mktemp -d /tmp/scrapr-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base-image: building $IMAGE with debootstrap (minbase) ..."
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    exit 1
}
rm -f "$root.log"
# Same trimming as the official slim image: no lists, docs, man pages, locales.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/tmp/*
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$root/etc/apt/apt.conf.d/docker-no-recommends"
tar -C "$root" -c . | docker import --change 'CMD ["bash"]' - "$IMAGE" >/dev/null
echo "base-image: $IMAGE built ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
