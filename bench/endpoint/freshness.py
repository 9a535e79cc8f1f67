#!/usr/bin/env python3
"""Freshness probe. For each of N rounds: note the datasource revision, POST
one new item to the datasource, then concurrently
  - long-poll the datasource (GET /collections/C?since=R&wait=10,
    If-None-Match) until its answer contains the item  -> t_ds
  - GET the item at the endpoint (keep-alive, no sleep) until 200 -> t_ep
and print "t_ep t_ds" in milliseconds from the POST. t_ep is the figure
users see; t_ep - t_ds is the endpoint's own share.
usage: freshness.py DS_URL EP_URL COLLECTION CONFIG_ID N"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

ds_url, ep_url, coll, config_id, n = sys.argv[1:6]
ds = urllib.parse.urlsplit(ds_url)
ep = urllib.parse.urlsplit(ep_url)
dsc = http.client.HTTPConnection(ds.hostname, ds.port, timeout=15)
epc = http.client.HTTPConnection(ep.hostname, ep.port, timeout=15)
stamp = int(time.time() * 1000)


def revision():
    dsc.request("GET", "/collections/%s?limit=0" % coll)
    r = dsc.getresponse()
    body = r.read()
    return json.loads(body)["revision"] if r.status == 200 else 0


def watch_ds(rev, key, t0, out):
    c = http.client.HTTPConnection(ds.hostname, ds.port, timeout=15)
    while time.perf_counter() - t0 < 12:
        c.request("GET", "/collections/%s?since=%d&wait=10" % (coll, rev),
                  headers={"If-None-Match": '"%d"' % rev})
        r = c.getresponse()
        body = r.read()
        if r.status == 200 and key.encode() in body:
            out.append((time.perf_counter() - t0) * 1000)
            return
        if r.status == 200:
            rev = json.loads(body)["revision"]


for i in range(int(n)):
    key = "fresh-%d-%d" % (stamp, i)
    rev = revision()
    body = json.dumps({"collection": coll, "config_id": config_id, "batch_id": key,
                       "key": ["id"], "data": [{"id": key, "text": "fresh item"}]})
    t0 = time.perf_counter()
    ds_seen = []
    w = threading.Thread(target=watch_ds, args=(rev, key, t0, ds_seen))
    w.start()
    for attempt in range(20):  # 503 = back-pressure: retry like the scraper does
        dsc.request("POST", "/items", body, {"Content-Type": "application/json"})
        r = dsc.getresponse()
        r.read()
        if r.status != 503:
            break
        time.sleep(float(r.getheader("Retry-After") or 1))
    if r.status != 202:
        sys.exit("POST /items answered %d" % r.status)
    while True:
        epc.request("GET", "/items/" + key)
        r = epc.getresponse()
        r.read()
        if r.status == 200:
            break
        if time.perf_counter() - t0 > 12:
            sys.exit("item %s not visible after 12 s" % key)
    t_ep = (time.perf_counter() - t0) * 1000
    w.join()
    print("%.2f %.2f" % (t_ep, ds_seen[0] if ds_seen else float("nan")), flush=True)
    time.sleep(0.05)
