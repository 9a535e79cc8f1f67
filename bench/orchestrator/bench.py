#!/usr/bin/env python3
"""Orchestrator benchmark (driven by run.sh, which starts Consul, FerretDB, the
real config-discovery and one orchestrator with the engine driver).

1. spawn latency: POST a scraper configuration (to a collection that already
   has its endpoint: one warm-up configuration creates it) → its scraper
   container is running and its process answers HTTP (GET /health on the
   container's IP; with BENCH_DRIVER=swarm: listens on its port, as overlay
   addresses are not reachable from the host, and the second peer is a
   `docker service create`), p50/p95 over N configurations, interleaved with the peers:
   a plain `docker run -d` of the same image and command on the same network,
   and two such `docker run`s at once (scraper + its Redis: the same work the
   orchestrator does per configuration), timed the same way (start → running
   and answering). Each measurement starts once the previous one's work is
   done (our Redis units running, assignments recorded), so neither side
   shares the engine with the other's leftovers.
2. new collection: POST a scraper configuration for a collection of its own
   (config-discovery adds the endpoint configuration: four containers) → the
   scraper answers, and → the endpoint answers (BENCH_NEW, default 5).
3. Consul notification latency: PUT of the revision key → the orchestrator's
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
import urllib.parse
import urllib.request

N = int(os.environ.get("BENCH_N", "20"))
NEW = int(os.environ.get("BENCH_NEW", "5"))
CD = os.environ["OT_CD"]
ORCH = os.environ["OT_ORCH"]
CONSUL = os.environ["OT_CONSUL"]
KV = os.environ["OT_KV"]
PREFIX = os.environ["OT_PREFIX"]
NET = os.environ["OT_NET"]
IMAGE = os.environ["OT_IMAGE"]
OWNER = os.environ["OT_OWNER"]
DRIVER = os.environ.get("OT_DRIVER", "engine")


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


def unit_container(name):
    """The container running unit `name`: the container itself (engine), or
    a running task container of the service (swarm)."""
    if DRIVER != "swarm":
        return inspect(name)
    f = urllib.parse.quote(json.dumps({"label": [f"com.docker.swarm.service.name={name}"],
                                       "status": ["running"]}))
    c = UnixHTTP("/var/run/docker.sock")
    c.request("GET", f"/v1.41/containers/json?filters={f}")
    r = c.getresponse()
    body = r.read()
    c.close()
    lst = json.loads(body) if r.status == 200 else []
    return inspect(lst[0]["Id"]) if lst else None


def listening(pid, port):
    """The container's process listens on port (its network namespace's
    /proc/PID/net/tcp{,6}, state 0A): used for Swarm, whose overlay addresses the
    host cannot reach."""
    want = f":{port:04X}"
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                if any(ln.split()[1].endswith(want) and ln.split()[3] == "0A" for ln in list(f)[1:]):
                    return True
        except OSError:
            pass
    return False


def answering(name, port, unit=True):
    j = unit_container(name) if unit else inspect(name)
    if not j or not j["State"]["Running"]:
        return False
    if DRIVER == "swarm":
        return listening(j["State"]["Pid"], port)
    nets = j["NetworkSettings"]["Networks"]
    ip = next((n["IPAddress"] for n in nets.values() if n.get("IPAddress")), None)
    if not ip:
        return False
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def wait_answering(name, port, t0, limit=120, unit=True):
    while time.time() - t0 < limit:
        if answering(name, port, unit):
            return time.time() - t0
        time.sleep(0.02)
    return float("nan")


def running(name):
    j = unit_container(name)
    return bool(j and j["State"]["Running"])


def settle(config_id, units, limit=120):
    """Waits until the orchestrator is done with a configuration (its units
    running, its assignment recorded), so the next measurement (ours or the
    peer's) does not share the engine with our leftover work."""
    t0 = time.time()
    while time.time() - t0 < limit:
        if all(running(u) for u in units):
            doc = http_json("GET", f"{CD}/configurations/{config_id}")
            st = http_json("GET", f"{ORCH}/status")["state"] or {}
            if doc.get("container") and not st.get("in_flight"):
                return
        time.sleep(0.05)


def created_at(name):
    """Container creation time (engine clock = our clock: same host), unix seconds."""
    from datetime import datetime
    c = unit_container(name)["Created"]  # 2026-11-22T21:55:03.123456789Z
    head, frac = c.rstrip("Z").split(".")
    return datetime.fromisoformat(head + "." + frac[:6] + "+00:00").timestamp()


def http_json(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        raw = r.read()
        return json.loads(raw) if raw else None


def scraper_config(coll):
    return {"collection": coll, "ttl": 60, "source": {"url": "http://site.invalid/", "type": "html"},
            "scope": "div.quote", "fields": {"text": "span.text"}}


def endpoint_id(coll):
    return http_json("GET", f"{CD}/configurations?type=endpoint&collection={coll}")["configurations"][0]["_id"]


def pct(v, p):
    v = sorted(x for x in v if x == x)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


PEER2 = "docker service create" if DRIVER == "swarm" else "2x docker run"


def main():
    ours, peer, peer2, react = [], [], [], []
    coll = f"bench-{OWNER.rsplit('-', 1)[-1]}"
    t0 = time.time()
    doc = http_json("POST", f"{CD}/configurations", scraper_config(coll))
    s = f"{PREFIX}-scraper-{doc['_id']}-0"
    e = f"{PREFIX}-endpoint-{endpoint_id(coll)}"
    wait_answering(s, 3002, t0)
    wait_answering(e, 3000, t0)
    settle(doc["_id"], [s, s + "-redis", e, e + "-redis"])
    settle(endpoint_id(coll), [e, e + "-redis"])
    for i in range(N):
        t0 = time.time()
        doc = http_json("POST", f"{CD}/configurations", scraper_config(coll))
        s = f"{PREFIX}-scraper-{doc['_id']}-0"
        ours.append(wait_answering(s, 3002, t0))
        react.append(created_at(s) - t0)
        settle(doc["_id"], [s, s + "-redis"])
        name = f"{PREFIX}-peer-{i}"
        t0 = time.time()
        subprocess.run(["docker", "run", "-d", "--name", name, "--network", NET,
                        "--label", f"scrapr.bench={OWNER}", "--restart", "unless-stopped",
                        IMAGE, "httpd", "-f", "-p", "3002", "-h", "/www"],
                       check=True, stdout=subprocess.DEVNULL)
        peer.append(wait_answering(name, 3002, t0, unit=False))
        name = f"{PREFIX}-peer2-{i}"
        t0 = time.time()
        if DRIVER == "swarm":
            # Swarm's own path: a service with one task, scheduled and started.
            subprocess.run(["docker", "service", "create", "-d", "-q", "--no-resolve-image", "--name", name,
                            "--network", NET, "--label", f"scrapr.bench={OWNER}",
                            "--endpoint-mode", "dnsrr", IMAGE, "httpd", "-f", "-p", "3002", "-h", "/www"],
                           check=True, stdout=subprocess.DEVNULL)
            peer2.append(wait_answering(name, 3002, t0))
        else:
            # Same work as the orchestrator does per configuration: the scraper
            # and its own Redis started together.
            procs = [subprocess.Popen(["docker", "run", "-d", "--name", n, "--network", NET,
                                       "--label", f"scrapr.bench={OWNER}", "--restart", "unless-stopped",
                                       IMAGE] + cmd, stdout=subprocess.DEVNULL)
                     for n, cmd in ((name, ["httpd", "-f", "-p", "3002", "-h", "/www"]),
                                    (name + "-redis", ["sleep", "86400"]))]
            peer2.append(wait_answering(name, 3002, t0, unit=False))
            for p in procs:
                p.wait()
        print(f"  config {i + 1:2d}/{N}: orchestrator {ours[-1]:.3f} s   docker run {peer[-1]:.3f} s"
              f"   {PEER2} {peer2[-1]:.3f} s", file=sys.stderr)

    new_s, new_e = [], []
    for i in range(NEW):
        c = f"{coll}-new{i}"
        t0 = time.time()
        doc = http_json("POST", f"{CD}/configurations", scraper_config(c))
        s = f"{PREFIX}-scraper-{doc['_id']}-0"
        e = f"{PREFIX}-endpoint-{endpoint_id(c)}"
        new_s.append(wait_answering(s, 3002, t0))
        new_e.append(wait_answering(e, 3000, t0))
        settle(doc["_id"], [s, s + "-redis", e, e + "-redis"])
        settle(endpoint_id(c), [e])
        print(f"  new collection {i + 1}/{NEW}: scraper {new_s[-1]:.3f} s   endpoint {new_e[-1]:.3f} s",
              file=sys.stderr)

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
    print(f"\norchestrator benchmark  ({DRIVER} driver, {N} configurations, {cores} cores, image {IMAGE},"
          f" load average {os.getloadavg()[0]:.1f})")
    print(f"command: bench/orchestrator/run.sh   BENCH_N={N} BENCH_NEW={NEW} BENCH_DRIVER={DRIVER}")
    print(f"{'':38s}{'p50':>9s}{'p95':>9s}{'max':>9s}")
    print(f"{'config POST -> scraper answering':38s}{pct(ours,50):9.3f}{pct(ours,95):9.3f}{max(ours):9.3f}  s")
    print(f"{'peer: docker run -> answering':38s}{pct(peer,50):9.3f}{pct(peer,95):9.3f}{max(peer):9.3f}  s")
    print(f"{'peer: ' + (PEER2 if DRIVER == 'swarm' else '2x docker run (app+redis)'):38s}{pct(peer2,50):9.3f}{pct(peer2,95):9.3f}{max(peer2):9.3f}  s")
    print(f"{'config POST -> container created':38s}{pct(react,50):9.3f}{pct(react,95):9.3f}{max(react):9.3f}  s  (orchestrator reaction)")
    print(f"{'difference (ours - peer)':38s}{pct(ours,50)-pct(peer,50):9.3f}{pct(ours,95)-pct(peer,95):9.3f}{'':9s}  s  (goal p95 <= peer + 0.5)")
    if new_s:
        print(f"{'new collection: POST -> scraper':38s}{pct(new_s,50):9.3f}{pct(new_s,95):9.3f}{max(new_s):9.3f}  s  ({NEW} samples)")
        print(f"{'new collection: POST -> endpoint':38s}{pct(new_e,50):9.3f}{pct(new_e,95):9.3f}{max(new_e):9.3f}  s")
    if notif:
        ms = [x * 1000 for x in notif]
        print(f"{'Consul KV write -> reconcile start':38s}{pct(ms,50):9.1f}{pct(ms,95):9.1f}{max(ms):9.1f}  ms  ({len(ms)} samples)")
    else:
        print("Consul KV write -> reconcile start: no sample")


if __name__ == "__main__":
    main()
