// Peer for bench/endpoint: a plain Node.js `http` server (the original
// design's runtime) holding the same bytes in memory, one worker per thread
// (cluster), gzip bytes sent when the client accepts gzip.
// usage: node node_server.js PORT WORKERS DIR   (serves DIR/<name> as /<name>)
'use strict';
const cluster = require('cluster');
const http = require('http');
const fs = require('fs');
const path = require('path');

const [port, workers, dir] = [Number(process.argv[2]), Number(process.argv[3]), process.argv[4]];

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
} else {
  const files = {};
  for (const name of fs.readdirSync(dir)) {
    if (name.endsWith('.gz')) continue;
    const plain = fs.readFileSync(path.join(dir, name));
    const gzPath = path.join(dir, name + '.gz');
    files['/' + name] = {
      plain,
      gz: fs.existsSync(gzPath) ? fs.readFileSync(gzPath) : null,
      etag: '"' + plain.length.toString(16) + '"',
    };
  }
  const server = http.createServer((req, res) => {
    const f = files[req.url];
    if (!f) {
      res.writeHead(404);
      res.end();
      return;
    }
    const gzip = f.gz && /\bgzip\b/.test(req.headers['accept-encoding'] || '');
    const body = gzip ? f.gz : f.plain;
    const headers = {'Content-Type': 'application/json', 'Content-Length': body.length, 'ETag': f.etag};
    if (gzip) headers['Content-Encoding'] = 'gzip';
    res.writeHead(200, headers);
    res.end(body);
  });
  server.keepAliveTimeout = 120000;
  server.listen(port, '127.0.0.1');
}
