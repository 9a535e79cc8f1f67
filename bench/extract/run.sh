#!/bin/bash
# Extraction benchmark: scrapr's engine vs Python lxml + cssselect (same
# selectors precompiled, same pages, same filters) vs lxml's parse alone, and
# our own parse-only floor. Builds a Release libshared in $BENCH_BUILD
# (default build-bench/), generates a deterministic corpus of 240 pages and
# prints the figures side by side with the command and the core count.
# Never fails on slowness; fails only if something does not run.
#   bench/extract/run.sh [ROUNDS]      (default 5 rounds over the corpus)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ROUNDS=${1:-5}
B=${BENCH_BUILD:-$ROOT/build-bench}
PY=""
for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import lxml.etree, cssselect' 2>/dev/null; then
        PY=$p
        break
    fi
done
[ -n "$PY" ] || { echo "bench: python3 with lxml + cssselect missing (scripts/deps.sh)" >&2; exit 1; }

cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DSCRAPR_SANITIZE=OFF >/dev/null
cmake --build "$B" --target shared -j2 >/dev/null
# shellcheck disable=SC2046
cc -O2 -std=gnu11 -D_GNU_SOURCE -I"$ROOT/libshared/include" "$HERE/bench_extract.c" \
    "$B/libshared/libshared.a" $(pkg-config --cflags --libs libxml-2.0 jansson libcurl) -lm \
    -o "$B/bench_extract"
CORPUS="$B/extract-corpus"
"$PY" "$HERE/gen_corpus.py" "$CORPUS" 120 >/dev/null

echo "# extraction benchmark — $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $ROUNDS rounds over $(ls "$CORPUS" | wc -l) pages ($(du -sh "$CORPUS" | cut -f1)), single thread each"
echo "# commands:"
run() {
    echo "#   $*" >&2
    "$@"
}
ours=$(run "$B/bench_extract" full "$ROUNDS" "$HERE" "$CORPUS")
ours_parse=$(run "$B/bench_extract" parse "$ROUNDS" "$HERE" "$CORPUS")
lxml=$(run "$PY" "$HERE/bench_lxml.py" full "$ROUNDS" "$HERE" "$CORPUS")
lxml_parse=$(run "$PY" "$HERE/bench_lxml.py" parse "$ROUNDS" "$HERE" "$CORPUS")

"$PY" - "$ours" "$ours_parse" "$lxml" "$lxml_parse" <<'PYEOF'
import json, sys
rows = [json.loads(a) for a in sys.argv[1:]]
o, op, l, lp = rows
print("%-16s %9s %12s %12s %7s %7s %7s" % ("engine", "pages/s", "pages/CPU-s", "CPU ms/page",
                                           "items", "values", "RSS MB"))
for r in rows:
    parse = "parse" in r["engine"]
    print("%-16s %9.1f %12.1f %12.4f %7s %7s %7.1f" % (
        r["engine"], r["pages_per_s"], 1000 / r["cpu_ms_per_page"], r["cpu_ms_per_page"],
        "-" if parse else r["items"], "-" if parse else r["values"], r["max_rss_mb"]))
print()
def ratio(a, b):
    return "%.2fx wall, %.2fx CPU" % (a["pages_per_s"] / b["pages_per_s"],
                                      b["cpu_ms_per_page"] / a["cpu_ms_per_page"])
print("scrapr extract vs lxml+cssselect pipeline: %s (goal >= 2x)" % ratio(o, l))
print("scrapr extract vs lxml parse only:         %s (goal >= 0.8x)" % ratio(o, lp))
print("selection+extraction share of our CPU:      %.0f%% (our parse alone: %.4f ms/page)" %
      (100 * (o["cpu_ms_per_page"] - op["cpu_ms_per_page"]) / o["cpu_ms_per_page"], op["cpu_ms_per_page"]))
same = o["items"] == l["items"] and o["values"] == l["values"]
print("same items and filled values as lxml: %s (%d/%d items, %d/%d values)" %
      ("yes" if same else "NO", o["items"], l["items"], o["values"], l["values"]))
print("(pages/s is wall-clock and suffers from other load on the machine; CPU figures are steadier)")
PYEOF
