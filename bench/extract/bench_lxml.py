#!/usr/bin/env python3
"""The peer of bench_extract.c: the same configurations (quotes.json,
products.json) over the same pages with Python lxml + cssselect, selectors
precompiled once (etree.XPath of HTMLTranslator().css_to_xpath), the same
targets (text with collapsed whitespace, @attr, own attribute) and filters
(absolute, number, int, regex, trim, lower). Mode "parse" times
lxml.etree.HTML parsing alone. Prints one JSON line.
   bench_lxml.py full|parse ROUNDS BENCH_DIR CORPUS_DIR"""
import json, os, re, resource, sys, time
from urllib.parse import urljoin
from lxml import etree
from cssselect import HTMLTranslator

mode, rounds, bench_dir, corpus = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
tr = HTMLTranslator()
WS = re.compile(r"[ \t\n\r\f]+")
NUM = re.compile(r"[0-9]+(?:,[0-9]{3})*(?:\.[0-9]+)?|\.[0-9]+")

def number(s, as_int):
    m = NUM.search(s)
    if not m:
        return None
    t = m.group(0).replace(",", "")
    neg = m.start() > 0 and s[m.start() - 1] == "-"
    v = float(t) if "." in t else int(t)
    if as_int:
        v = int(v)
    return -v if neg else v

def compile_filter(f):
    name, _, arg = f.strip().partition(":")
    if name == "trim":
        return lambda v, base: v.strip() if isinstance(v, str) else v
    if name == "lower":
        return lambda v, base: v.lower() if isinstance(v, str) else v
    if name == "absolute":
        return lambda v, base: urljoin(base, v) if isinstance(v, str) else v
    if name in ("number", "int"):
        return lambda v, base, i=(name == "int"): number(v, i) if isinstance(v, str) else v
    if name == "regex":
        rx = re.compile(arg)
        def f_re(v, base):
            if not isinstance(v, str):
                return v
            m = rx.search(v)
            return None if not m else (m.group(1) if rx.groups else m.group(0))
        return f_re
    raise SystemExit("unsupported filter " + name)

def compile_sel(expr):
    parts = expr.split("|")
    sel = parts[0].strip()
    attr = None
    if "@" in sel:
        sel, attr = sel.rsplit("@", 1)
        sel = sel.strip()
    xp = etree.XPath(tr.css_to_xpath(sel)) if sel else None
    return xp, attr, [compile_filter(f) for f in parts[1:]]

def load(name):
    c = json.load(open(os.path.join(bench_dir, name)))
    fields = []
    for k, v in c["fields"].items():
        lst = isinstance(v, list)
        fields.append((k, lst, compile_sel(v[0] if lst else v)))
    return etree.XPath(tr.css_to_xpath(c["scope"])), fields, compile_sel(c["paginate"])

def values(sel, node, base, all_):
    xp, attr, filters = sel
    nodes = xp(node) if xp is not None else [node]
    out = []
    for n in nodes:
        if attr:
            v = n.get(attr)
            if v is None:
                continue
        else:
            v = WS.sub(" ", n.xpath("string()")).strip(" ")
        for f in filters:
            v = f(v, base)
        if v is None:
            continue
        if not all_:
            return v
        out.append(v)
    return out if all_ else None

cfg = {"quotes": load("quotes.json"), "products": load("products.json")}
pages = []
for name in sorted(os.listdir(corpus)):
    kind = "quotes" if name.startswith("quotes-") else "products" if name.startswith("products-") else None
    if kind:
        with open(os.path.join(corpus, name), "rb") as f:
            pages.append((kind, f.read(), "http://%s.example/%s" % ("quotes" if kind == "quotes" else "books", name)))

parser = etree.HTMLParser()
items = vals = nexts = 0
nbytes = 0
w0, c0 = time.perf_counter(), time.process_time()
for r in range(rounds):
    for kind, body, url in pages:
        nbytes += len(body)
        root = etree.fromstring(body, parser, base_url=url)
        if mode == "parse":
            items += root is not None
            continue
        scope, fields, paginate = cfg[kind]
        out = []
        for node in scope(root):
            it = {}
            for k, lst, sel in fields:
                it[k] = values(sel, node, url, lst)
            out.append(it)
        nx = [urljoin(url, u) for u in values(paginate, root, url, True)]
        items += len(out)
        nexts += len(nx)
        vals += sum(1 for it in out for v in it.values() if v is not None and v != [])
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
total = len(pages) * rounds
print(json.dumps({"engine": "lxml-" + ("parse" if mode == "parse" else "cssselect"),
                  "pages": total, "distinct_pages": len(pages), "mb": round(nbytes / 1e6, 1),
                  "items": items // max(rounds, 1), "values": vals // max(rounds, 1),
                  "next_urls": nexts // max(rounds, 1), "wall_s": round(wall, 3),
                  "cpu_s": round(cpu, 3), "pages_per_s": round(total / wall, 1),
                  "cpu_ms_per_page": round(1000 * cpu / total, 4),
                  "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
