#!/usr/bin/env python3
"""Datasource soak: concurrent POST /items to several collections while
long-polls and list/page reads run, for a fixed duration. Counts every answer
by class and reports errors (5xx, transport failures, long-polls that stall).

    soak.py BASE_URL [--seconds 120] [--writers 4] [--collections 4]
            [--pollers 6] [--batch 50] [--keys 2000]

Exit status 1 when any request failed (5xx or transport error) or a long-poll
took more than its wait + 5 s. 503 with Retry-After (back-pressure) is counted
separately and is not a failure.
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()
STATS = {}
SLOW = []


def count(kind, status):
    with LOCK:
        STATS.setdefault(kind, {}).setdefault(status, 0)
        STATS[kind][status] += 1


class Client:
    def __init__(self, base, timeout):
        u = urllib.parse.urlparse(base)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, dict(r.getheaders()), data
            except (http.client.HTTPException, OSError) as e:
                self.conn.close()
                self.conn = None
                if attempt == 1 or not isinstance(
                    e, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
                ):
                    return -1, {}, str(e).encode()
        return -1, {}, b""


def writer(args, wid, stop):
    c = Client(args.base, 60)
    rnd = random.Random(wid)
    n = 0
    while not stop.is_set():
        coll = "soak%d" % rnd.randrange(args.collections)
        items = [
            {"id": "k%d" % rnd.randrange(args.keys), "v": rnd.random(), "w": wid, "n": n}
            for _ in range(args.batch)
        ]
        body = json.dumps(
            {"collection": coll, "batch_id": "w%d-%d-%d" % (wid, args.run, n), "key": ["id"],
             "data": items}
        )
        while not stop.is_set():
            t0 = time.time()
            st, hdr, data = c.request("POST", "/items", body, {"Content-Type": "application/json"})
            dt = time.time() - t0
            count("post", st)
            if st >= 500 and st != 503 or st < 0:
                with LOCK:
                    SLOW.append(("post", st, round(dt, 3), data[:200].decode(errors="replace")))
            if st == 202:
                break
            time.sleep(1.0 if st == 503 else 0.2)
        n += 1
        if args.pause:
            time.sleep(args.pause)


def poller(args, pid, stop):
    c = Client(args.base, args.wait + 30)
    rnd = random.Random(1000 + pid)
    coll = "soak%d" % (pid % args.collections)
    rev = None
    while not stop.is_set():
        hdr = {"If-None-Match": '"%s"' % rev} if rev is not None else {}
        t0 = time.time()
        st, h, data = c.request(
            "GET", "/collections/%s?limit=%d&wait=%g" % (coll, rnd.choice([1, 10, 100]), args.wait),
            None, hdr,
        )
        dt = time.time() - t0
        count("longpoll", st)
        if st == 200:
            try:
                rev = json.loads(data)["revision"]
            except (ValueError, KeyError):
                count("longpoll", "badjson")
        if (st >= 500 or st < 0) or dt > args.wait + 5:
            with LOCK:
                SLOW.append(("longpoll", st, round(dt, 3), data[:200].decode(errors="replace")))
        if st not in (200, 304):
            time.sleep(0.2)


def reader(args, stop):
    c = Client(args.base, 60)
    rnd = random.Random(7)
    while not stop.is_set():
        path = rnd.choice(
            ["/collections", "/collections/soak%d?limit=50&skip=%d" % (rnd.randrange(args.collections), rnd.randrange(100)),
             "/collections/soak0?since=%d&limit=100" % rnd.randrange(50), "/health"]
        )
        t0 = time.time()
        st, h, data = c.request("GET", path)
        dt = time.time() - t0
        count("read", st)
        if st >= 500 or st < 0 or dt > 5:
            with LOCK:
                SLOW.append(("read " + path, st, round(dt, 3), data[:200].decode(errors="replace")))
        time.sleep(0.05)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--collections", type=int, default=4)
    ap.add_argument("--pollers", type=int, default=6)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--keys", type=int, default=2000)
    ap.add_argument("--wait", type=float, default=5)
    ap.add_argument("--pause", type=float, default=0)
    ap.add_argument("--run", type=int, default=int(time.time()))
    args = ap.parse_args()
    stop = threading.Event()
    threads = [threading.Thread(target=writer, args=(args, i, stop)) for i in range(args.writers)]
    threads += [threading.Thread(target=poller, args=(args, i, stop)) for i in range(args.pollers)]
    threads.append(threading.Thread(target=reader, args=(args, stop)))
    for t in threads:
        t.daemon = True
        t.start()
    t0 = time.time()
    last = {}
    while time.time() - t0 < args.seconds:
        time.sleep(min(10, args.seconds - (time.time() - t0)) if args.seconds - (time.time() - t0) > 0 else 0)
        with LOCK:
            snap = json.dumps(STATS, sort_keys=True)
            nslow = len(SLOW)
        print("t=%5.0fs %s failures=%d" % (time.time() - t0, snap, nslow), flush=True)
    stop.set()
    for t in threads:
        t.join(args.wait + 35)
    fails = 0
    for kind, d in STATS.items():
        for st, n in d.items():
            if st == -1 or (isinstance(st, int) and st >= 500 and st != 503) or st == "badjson":
                fails += n
    print("final:", json.dumps(STATS, sort_keys=True))
    print("failures (5xx except 503, transport errors): %d; slow/failed samples:" % fails)
    for s in SLOW[:20]:
        print("  ", s)
    slow_polls = sum(1 for s in SLOW if s[0] == "longpoll" and s[1] in (200, 304))
    print("long-polls over wait+5s: %d" % slow_polls)
    sys.exit(1 if fails or slow_polls else 0)


if __name__ == "__main__":
    main()
