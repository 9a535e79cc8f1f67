#!/usr/bin/env python3
"""Stand-in config-discovery for the orchestrator tests until the real one
lands: GET /configurations in the brief's shape ({"configurations", "total"},
limit/skip), POST/PUT/DELETE /configurations[/{id}] with version bumps, and
every change bumps the Consul KV revision key, like the real service.
GET /_stats answers {"puts": n} (PUTs received) so tests can see the
orchestrator's assignment write-backs.

    fake_config_discovery.py PORT CONSUL_ADDR REVISION_KEY
"""
import json
import os
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime, timezone
from urllib.parse import urlparse, parse_qs

PORT, CONSUL, REV_KEY = int(sys.argv[1]), sys.argv[2], sys.argv[3]
lock = threading.Lock()
configs = {}  # id -> doc, insertion ordered
state = {"rev": 0, "puts": 0}


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def bump():
    state["rev"] += 1
    base = CONSUL if CONSUL.startswith("http") else "http://" + CONSUL
    req = urllib.request.Request(f"{base}/v1/kv/{REV_KEY}", data=str(state["rev"]).encode(), method="PUT")
    urllib.request.urlopen(req, timeout=5).read()


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, obj=None):
        body = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        with lock:
            if u.path == "/_stats":
                return self.send(200, {"puts": state["puts"], "rev": state["rev"]})
            if u.path == "/health":
                return self.send(200, {"status": "ok"})
            if u.path == "/configurations":
                docs = list(configs.values())
                skip = int(q.get("skip", ["0"])[0])
                limit = int(q.get("limit", ["100"])[0])
                return self.send(200, {"configurations": docs[skip:skip + limit], "total": len(docs)})
            if u.path.startswith("/configurations/"):
                d = configs.get(u.path.split("/")[2])
                return self.send(200, d) if d else self.send(404, {"error": "not found", "details": []})
        self.send(404, {"error": "no route", "details": []})

    def do_POST(self):
        b = self.body()
        with lock:
            b.setdefault("_id", os.urandom(12).hex())
            b.setdefault("type", "scraper")
            b.update(container=None, version=1, created_at=now(), updated_at=now())
            configs[b["_id"]] = b
            bump()
            self.send(201, b)

    def do_PUT(self):
        cid = self.path.split("/")[2]
        b = self.body()
        with lock:
            d = configs.get(cid)
            if not d:
                return self.send(404, {"error": "not found", "details": []})
            for k in ("_id", "version", "created_at", "updated_at"):
                b.pop(k, None)
            d.update(b)
            d["version"] += 1
            d["updated_at"] = now()
            state["puts"] += 1
            bump()
            self.send(200, d)

    def do_DELETE(self):
        cid = self.path.split("/")[2]
        with lock:
            if configs.pop(cid, None) is None:
                return self.send(404, {"error": "not found", "details": []})
            bump()
            self.send(204)


ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
