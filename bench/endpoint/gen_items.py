#!/usr/bin/env python3
"""Deterministic quote-like items for bench/endpoint: N items whose public
form (with _key/_first_seen/_last_seen added by the endpoint) is ~200 bytes.
usage: gen_items.py N PREFIX  -> JSON array on stdout"""
import json
import random
import sys

n, prefix = int(sys.argv[1]), sys.argv[2]
rng = random.Random(42)
words = ("life love truth world mind light time heart dream hope fear change simple "
         "nothing always never people know think").split()
out = []
for i in range(n):
    text = " ".join(rng.choice(words) for _ in range(9)).capitalize() + "."
    out.append({
        "id": "%s-%05d" % (prefix, i),
        "text": text[:40],
        "author": {"name": rng.choice(["Ann Lee", "Bob Stone", "Cy Young"])},
        "tags": rng.sample(words, 2),
    })
json.dump(out, sys.stdout, separators=(",", ":"))
