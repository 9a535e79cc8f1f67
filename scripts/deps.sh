#!/bin/sh
# Installs, idempotently, every build/runtime/test dependency of scrapr on a
# Debian bookworm machine: -dev packages from apt, Consul (Debian's bullseye
# package, unpacked into tools/ without touching the system's apt sources) and
# FerretDB (built with the machine's Go through the Go module proxy).
# Usage: scripts/deps.sh            everything
#        scripts/deps.sh --apt      only the apt packages
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS="$ROOT/tools"
mkdir -p "$TOOLS/bin"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

PKGS="build-essential cmake pkg-config git ca-certificates curl
libcurl4-openssl-dev libmongoc-dev libbson-dev libhiredis-dev libmicrohttpd-dev
libjansson-dev libxml2-dev zlib1g-dev libcmocka-dev
redis-server python3 python3-lxml python3-cssselect nginx-light wrk
debootstrap clang-format iproute2 procps psmisc bc busybox-static"

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "deps: installing$missing"
    $SUDO apt-get update -qq
    # nginx/redis postinst try to start daemons; we only need the binaries.
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
    $SUDO systemctl disable --now nginx redis-server >/dev/null 2>&1 || true
    $SUDO pkill -x nginx 2>/dev/null || true
fi
if ! command -v docker >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    ($SUDO service docker start || $SUDO systemctl start docker) >/dev/null 2>&1 || true
fi
[ "${1:-}" = "--apt" ] && exit 0

# Consul: Debian's package from the bullseye suite, fetched with a private apt
# configuration built from this machine's own Debian mirror.
if [ ! -x "$TOOLS/bin/consul" ]; then
    mirror=$(grep -h -E '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -v -- '-security' | grep -i debian | head -1 \
        | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*$//')
    [ -n "$mirror" ] || { echo "deps: no Debian mirror found in apt configuration" >&2; exit 1; }
    work=$(mktemp -d)
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/etc/preferences.d" "$work/etc/apt.conf.d"
    echo "deb [trusted=yes] $mirror bullseye main" >"$work/etc/sources.list"
    opts="-o Dir::Etc::SourceList=$work/etc/sources.list -o Dir::Etc::SourceParts=/dev/null
          -o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache
          -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=$work/etc/preferences.d
          -o APT::Get::List-Cleanup=0 -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
    # shellcheck disable=SC2086
    apt-get $opts update -qq
    (cd "$work" && apt-get $opts download consul >/dev/null)
    dpkg-deb -x "$work"/consul_*.deb "$work/root"
    install -m 0755 "$work/root/usr/bin/consul" "$TOOLS/bin/consul"
    rm -rf "$work"
fi

# FerretDB v1 (embedded SQLite backend) through a tiny wrapper module: a plain
# `go install` of its cmd panics at start for lack of a generated version file.
FERRET_VERSION=v1.24.2
# Rebuilt when the version or the wrapper's source changes.
FERRET_STAMP="$FERRET_VERSION $(sha256sum "$ROOT/scripts/ferretdb/main.go" | cut -c1-16)"
if [ ! -x "$TOOLS/bin/ferretdb" ] || [ "$(cat "$TOOLS/ferretdb.version" 2>/dev/null)" != "$FERRET_STAMP" ]; then
    command -v go >/dev/null 2>&1 || PATH="$PATH:/usr/local/go/bin"
    build=$(mktemp -d)
    cp "$ROOT/scripts/ferretdb/main.go" "$build/"
    (cd "$build" && go mod init scrapr/ferretdb >/dev/null 2>&1 &&
        go get "github.com/FerretDB/FerretDB@$FERRET_VERSION" >/dev/null 2>&1 &&
        go mod tidy >/dev/null 2>&1 &&
        CGO_ENABLED=0 go build -o "$TOOLS/bin/ferretdb" .)
    echo "$FERRET_STAMP" >"$TOOLS/ferretdb.version"
    rm -rf "$build"
fi
echo "deps: ok (consul $("$TOOLS/bin/consul" version | head -1 | cut -d' ' -f2), ferretdb $FERRET_VERSION)"
