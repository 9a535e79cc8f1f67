#!/usr/bin/env python3
"""Orchestrator benchmark (driven by run.sh, which starts Consul, a stand-in
config-discovery and one orchestrator with the engine driver).

1. spawn latency: POST a scraper configuration → its scraper container is
   running and its process answers HTTP (GET /health on the container's IP),
   p50/p95 over N configurations, interleaved with the peers: a plain
   `docker run -d` of the same image and command on the same network, and two
   such `docker run`s at once (scraper + its Redis: the same work the
   orchestrator does per configuration), timed the same way (start → running
   and answering).
2. Consul notification latency: PUT of the revision key → the orchestrator's
   next reconcile pass starts (its own wall-clock stamp from GET /status).

Never fails on slowness; prints figures only.
"""
import json
import os
import socket
import http.client
import statistics
import subprocess
import sys
import time
import urllib.request

N = int(os.environ.get("BENCH_N", "20"))
CD = os.environ["OT_CD"]
ORCH = os.environ["OT_ORCH"]
CONSUL = os.environ["OT_CONSUL"]
KV = os.environ["OT_KV"]
PREFIX = os.environ["OT_PREFIX"]
NET = os.environ["OT_NET"]
IMAGE = os.environ["OT_IMAGE"]
OWNER = os.environ["OT_OWNER"]


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def inspect(name):
    c = UnixHTTP("/var/run/docker.sock")
    c.request("GET", f"/v1.41/containers/{name}/json")
    r = c.getresponse()
    body = r.read()
    c.close()
    return json.loads(body) if r.status == 200 else None


def answering(name, port):
    j = inspect(name)
    if not j or not j["State"]["Running"]:
        return False
    nets = j["NetworkSettings"]["Networks"]
    ip = next((n["IPAddress"] for n in nets.values() if n.get("IPAddress")), None)
    if not ip:
        return False
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def wait_answering(name, port, t0, limit=120):
    while time.time() - t0 < limit:
        if answering(name, port):
            return time.time() - t0
        time.sleep(0.02)
    return float("nan")


def created_at(name):
    """Container creation time (engine clock = our clock: same host), unix seconds."""
    from datetime import datetime
    c = inspect(name)["Created"]  # 2026-11-22T21:55:03.123456789Z
    head, frac = c.rstrip("Z").split(".")
    return datetime.fromisoformat(head + "." + frac[:6] + "+00:00").timestamp()


def http_json(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def pct(v, p):
    v = sorted(x for x in v if x == x)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def main():
    ours, peer, peer2, react = [], [], [], []
    for i in range(N):
        t0 = time.time()
        doc = http_json("POST", f"{CD}/configurations",
                        {"type": "scraper", "collection": f"bench{i}", "ttl": 60})
        ours.append(wait_answering(f"{PREFIX}-scraper-{doc['_id']}-0", 3002, t0))
        react.append(created_at(f"{PREFIX}-scraper-{doc['_id']}-0") - t0)
        name = f"{PREFIX}-peer-{i}"
        t0 = time.time()
        subprocess.run(["docker", "run", "-d", "--name", name, "--network", NET,
                        "--label", f"scrapr.bench={OWNER}", "--restart", "unless-stopped",
                        IMAGE, "httpd", "-f", "-p", "3002", "-h", "/www"],
                       check=True, stdout=subprocess.DEVNULL)
        peer.append(wait_answering(name, 3002, t0))
        # Same work as the orchestrator does per configuration: the scraper and
        # its own Redis started together.
        name = f"{PREFIX}-peer2-{i}"
        t0 = time.time()
        procs = [subprocess.Popen(["docker", "run", "-d", "--name", n, "--network", NET,
                                   "--label", f"scrapr.bench={OWNER}", "--restart", "unless-stopped",
                                   IMAGE] + cmd, stdout=subprocess.DEVNULL)
                 for n, cmd in ((name, ["httpd", "-f", "-p", "3002", "-h", "/www"]),
                                (name + "-redis", ["sleep", "86400"]))]
        peer2.append(wait_answering(name, 3002, t0))
        for p in procs:
            p.wait()
        print(f"  config {i + 1:2d}/{N}: orchestrator {ours[-1]:.3f} s   docker run {peer[-1]:.3f} s"
              f"   2x docker run {peer2[-1]:.3f} s", file=sys.stderr)

    notif = []
    for i in range(N):
        before = http_json("GET", f"{ORCH}/status")["reconcile"]["passes"]
        t0 = time.time()
        req = urllib.request.Request(f"{CONSUL}/v1/kv/{KV}/revision", data=str(10_000 + i).encode(), method="PUT")
        urllib.request.urlopen(req, timeout=5).read()
        deadline = t0 + 30
        while time.time() < deadline:
            st = http_json("GET", f"{ORCH}/status")["reconcile"]
            if st["passes"] > before and st["last_start"] >= t0:
                notif.append(st["last_start"] - t0)
                break
            time.sleep(0.01)
        time.sleep(0.3)

    cores = os.cpu_count()
    print(f"\norchestrator benchmark  (engine driver, {N} configurations, {cores} cores, image {IMAGE})")
    print(f"command: bench/orchestrator/run.sh   BENCH_N={N}")
    print(f"{'':38s}{'p50':>9s}{'p95':>9s}{'max':>9s}")
    print(f"{'config POST -> scraper answering':38s}{pct(ours,50):9.3f}{pct(ours,95):9.3f}{max(ours):9.3f}  s")
    print(f"{'peer: docker run -> answering':38s}{pct(peer,50):9.3f}{pct(peer,95):9.3f}{max(peer):9.3f}  s")
    print(f"{'peer: 2x docker run (app+redis)':38s}{pct(peer2,50):9.3f}{pct(peer2,95):9.3f}{max(peer2):9.3f}  s")
    print(f"{'config POST -> container created':38s}{pct(react,50):9.3f}{pct(react,95):9.3f}{max(react):9.3f}  s  (orchestrator reaction)")
    print(f"{'difference (ours - peer)':38s}{pct(ours,50)-pct(peer,50):9.3f}{pct(ours,95)-pct(peer,95):9.3f}{'':9s}  s  (goal p95 <= peer + 0.5)")
    if notif:
        ms = [x * 1000 for x in notif]
        print(f"{'Consul KV write -> reconcile start':38s}{pct(ms,50):9.1f}{pct(ms,95):9.1f}{max(ms):9.1f}  ms  ({len(ms)} samples)")
    else:
        print("Consul KV write -> reconcile start: no sample")


if __name__ == "__main__":
    main()
