#!/bin/bash
# Differential test of the CSS → XPath compiler against lxml + cssselect
# (HTMLTranslator): every selector of tests/fixtures/pages/selectors.txt runs
# over every fixture page through our engine (tests/unit_test_css_dump) and
# through Python lxml; the matched nodes (path, normalised text, attributes)
# must be identical, and so must the set of selectors that fail to compile.
# python3-lxml and python3-cssselect come from scripts/deps.sh; missing → FAIL.
set -u
SRC=${SCRAPR_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BIN=${SCRAPR_BIN_DIR:-$SRC/build/bin}
DUMP="$BIN/../tests/unit_test_css_dump"
PAGES="$SRC/tests/fixtures/pages"
SELS="$PAGES/selectors.txt"
[ -x "$DUMP" ] || { echo "FAIL: $DUMP not built"; exit 1; }
PY=""
for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import lxml.etree, cssselect' 2>/dev/null; then
        PY=$p
        break
    fi
done
[ -n "$PY" ] || { echo "FAIL: python3 with lxml + cssselect not found (scripts/deps.sh installs them)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/ref.py" <<'PYEOF'
import re, sys
from lxml import etree
from cssselect import HTMLTranslator
ws = re.compile(r"[ \t\n\r\f]+")
def norm(s):
    return ws.sub(" ", s).strip(" ")
tree = etree.parse(sys.argv[1], etree.HTMLParser())
tr = HTMLTranslator()
out = sys.stdout
for line in open(sys.argv[2], encoding="utf-8"):
    line = line.rstrip("\r\n")
    if not line or line.startswith("#"):
        continue
    out.write("== %s\n" % line)
    try:
        xp = tr.css_to_xpath(line)
    except Exception:
        out.write("ERROR\n")
        continue
    for el in tree.xpath(xp):
        attrs = sorted("%s=%s" % (k, v) for k, v in el.attrib.items())
        out.write("%s\t%s\t%s\n" % (tree.getpath(el), norm(el.xpath("string()")), ";".join(attrs)))
PYEOF

nsel=$(grep -cv '^\(#\|$\)' "$SELS")
[ "$nsel" -ge 40 ] || { echo "FAIL: only $nsel selectors"; exit 1; }
fail=0
npages=0
for page in quotes-1.html quotes-2.html products.html broken.html author-Albert-Einstein.html; do
    npages=$((npages + 1))
    "$DUMP" "$PAGES/$page" "$SELS" >"$tmp/ours.txt" || { echo "FAIL: driver failed on $page"; exit 1; }
    "$PY" "$tmp/ref.py" "$PAGES/$page" "$SELS" >"$tmp/ref.txt" || { echo "FAIL: lxml failed on $page"; exit 1; }
    if ! diff -u "$tmp/ref.txt" "$tmp/ours.txt" >"$tmp/diff.txt"; then
        echo "FAIL: $page differs from lxml+cssselect (- lxml, + ours):"
        head -60 "$tmp/diff.txt"
        fail=1
    fi
    matched=$(grep -vc '^\(==\|ERROR\)' "$tmp/ours.txt")
    echo "$page: $nsel selectors, $matched matched nodes, identical=$([ $fail = 0 ] && echo yes || echo no)"
done
[ "$fail" = 0 ] || exit 1
echo "ok: $nsel selectors x $npages pages identical to lxml + cssselect"
