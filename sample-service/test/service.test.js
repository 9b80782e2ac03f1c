'use strict';

const { describe, it, before, after, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');

const { start, TRACE_HEADERS } = require('../service');

const LOCAL = '127.0.0.1';

// Minimal HTTP client: fresh connection per request, JSON-decoded body.
function request(port, urlPath, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: LOCAL, port, path: urlPath, method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, text, body: json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body !== undefined) {
      const payload = typeof body === 'string' ? body : JSON.stringify(body);
      req.setHeader('content-type', 'application/json');
      req.setHeader('content-length', Buffer.byteLength(payload));
      req.end(payload);
    } else {
      req.end();
    }
  });
}

function startLocal(overrides = {}) {
  return start({
    host: LOCAL,
    port: 0,
    adminPort: 0,
    version: 'v1',
    meshOutboundHost: null,
    log: null,
    ...overrides,
  });
}

// A port nothing listens on (bound then released).
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, LOCAL, () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

describe('microservice-1', () => {
  let svc; // service under test
  let peer; // a second instance used as the downstream of /api/call
  let mesh; // instance with meshOutboundHost set

  before(async () => {
    svc = await startLocal({ podName: 'pod-a' });
    peer = await startLocal({ podName: 'pod-b', version: 'v2' });
    mesh = await startLocal({ podName: 'pod-mesh', meshOutboundHost: LOCAL });
  });

  after(async () => {
    await Promise.all([svc.close(), peer.close(), mesh.close()]);
  });

  beforeEach(async () => {
    for (const s of [svc, peer, mesh]) {
      await request(s.adminPort, '/admin/fault', { method: 'DELETE' });
    }
  });

  describe('app port', () => {
    it('GET /api/greet returns the greeting, version, pod and method', async () => {
      const res = await request(svc.port, '/api/greet');
      assert.equal(res.status, 200);
      assert.match(res.headers['content-type'], /application\/json/);
      assert.deepEqual(res.body, {
        message: 'Hello from Microservice 1!',
        version: 'v1',
        pod: 'pod-a',
        method: 'GET',
        xfcc: null,
      });
    });

    it('echoes x-forwarded-client-cert as xfcc', async () => {
      const xfcc = 'By=spiffe://cluster.local/ns/sample/sa/microservice-1;Hash=abc;Subject="";URI=spiffe://cluster.local/ns/sample/sa/client';
      const res = await request(svc.port, '/api/greet', { headers: { 'x-forwarded-client-cert': xfcc } });
      assert.equal(res.status, 200);
      assert.equal(res.body.xfcc, xfcc);
    });

    it('answers 200 with the method for POST, PUT, DELETE and PATCH', async () => {
      for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
        const res = await request(svc.port, '/api/greet', { method, body: { any: 'thing' } });
        assert.equal(res.status, 200, method);
        assert.equal(res.body.method, method);
        assert.equal(res.body.message, 'Hello from Microservice 1!');
        assert.equal(res.body.pod, 'pod-a');
      }
    });

    it('serves /healthz on the app and admin ports', async () => {
      for (const port of [svc.port, svc.adminPort]) {
        const res = await request(port, '/healthz');
        assert.equal(res.status, 200);
        assert.deepEqual(res.body, { status: 'ok', pod: 'pod-a', version: 'v1' });
      }
    });

    it('answers unknown paths with a JSON 404', async () => {
      const res = await request(svc.port, '/nope');
      assert.equal(res.status, 404);
      assert.equal(res.body.error, 'not found');
    });
  });

  describe('fault injection', () => {
    it('injects 503 on every /api request at rate 1 and counts them', async () => {
      await request(svc.adminPort, '/admin/stats', { method: 'DELETE' });
      const set = await request(svc.adminPort, '/admin/fault', { method: 'POST', body: { status: 503, rate: 1.0 } });
      assert.equal(set.status, 200);
      assert.equal(set.body.active, true);
      assert.equal(set.body.status, 503);
      assert.equal(set.body.rate, 1);
      assert.equal(set.body.delay_ms, 0);

      for (let i = 0; i < 5; i++) {
        const res = await request(svc.port, '/api/greet');
        assert.equal(res.status, 503);
        assert.deepEqual(res.body, { error: 'injected fault', status: 503, pod: 'pod-a', version: 'v1' });
      }
      const health = await request(svc.port, '/healthz');
      assert.equal(health.status, 200, '/healthz is not subject to faults');

      const stats = await request(svc.adminPort, '/admin/stats');
      assert.deepEqual(stats.body, { requests: 5, faults: 5, pod: 'pod-a' });
      const current = await request(svc.adminPort, '/admin/fault');
      assert.equal(current.body.active, true);
      assert.equal(current.body.requests, 5);
      assert.equal(current.body.faults, 5);
    });

    it('with ADMIN_FAULT=false has no /admin/fault (404) but keeps /healthz and /admin/stats', async () => {
      const closed = await startLocal({ podName: 'pod-closed', adminFault: 'false' });
      try {
        for (const method of ['GET', 'POST', 'DELETE']) {
          const res = await request(closed.adminPort, '/admin/fault', { method, body: method === 'POST' ? { status: 503 } : undefined });
          assert.equal(res.status, 404, method);
        }
        assert.equal((await request(closed.port, '/api/greet')).status, 200, 'no fault was set');
        assert.equal((await request(closed.adminPort, '/healthz')).status, 200);
        assert.equal((await request(closed.adminPort, '/admin/stats')).status, 200);
      } finally {
        await closed.close();
      }
    });

    it('refuses an ADMIN_FAULT that is not a boolean', async () => {
      await assert.rejects(startLocal({ adminFault: 'maybe' }), /ADMIN_FAULT/);
    });

    it('injects nothing at rate 0', async () => {
      await request(svc.adminPort, '/admin/stats', { method: 'DELETE' });
      await request(svc.adminPort, '/admin/fault', { method: 'POST', body: { status: 500, rate: 0 } });
      for (let i = 0; i < 10; i++) {
        const res = await request(svc.port, '/api/greet');
        assert.equal(res.status, 200);
      }
      const stats = await request(svc.adminPort, '/admin/stats');
      assert.equal(stats.body.requests, 10);
      assert.equal(stats.body.faults, 0);
    });

    it('honours delay_ms (delay only with status null, and delay then error)', async () => {
      await request(svc.adminPort, '/admin/fault', { method: 'POST', body: { status: null, delay_ms: 150 } });
      let t0 = Date.now();
      let res = await request(svc.port, '/api/greet');
      assert.equal(res.status, 200);
      assert.equal(res.body.message, 'Hello from Microservice 1!');
      assert.ok(Date.now() - t0 >= 150, `delay-only request took ${Date.now() - t0} ms`);

      await request(svc.adminPort, '/admin/fault', { method: 'POST', body: { status: 429, delay_ms: 100 } });
      t0 = Date.now();
      res = await request(svc.port, '/api/greet');
      assert.equal(res.status, 429);
      assert.ok(Date.now() - t0 >= 100, `delayed fault took ${Date.now() - t0} ms`);
    });

    it('defaults an empty POST to status 503, rate 1, delay 0', async () => {
      const res = await request(svc.adminPort, '/admin/fault', { method: 'POST' });
      assert.equal(res.status, 200);
      assert.equal(res.body.active, true);
      assert.equal(res.body.status, 503);
      assert.equal(res.body.rate, 1);
      assert.equal(res.body.delay_ms, 0);
      assert.equal((await request(svc.port, '/api/greet')).status, 503);
    });

    it('DELETE clears the fault', async () => {
      await request(svc.adminPort, '/admin/fault', { method: 'POST', body: { status: 503 } });
      assert.equal((await request(svc.port, '/api/greet')).status, 503);
      const del = await request(svc.adminPort, '/admin/fault', { method: 'DELETE' });
      assert.equal(del.status, 200);
      assert.deepEqual(del.body, { active: false });
      const current = await request(svc.adminPort, '/admin/fault');
      assert.equal(current.body.active, false);
      assert.equal(typeof current.body.requests, 'number');
      assert.equal(typeof current.body.faults, 'number');
      assert.equal((await request(svc.port, '/api/greet')).status, 200);
    });

    it('rejects invalid fault bodies with 400 and keeps the previous state', async () => {
      const invalid = [
        { status: 99 }, { status: 600 }, { status: '503' }, { status: 503.5 },
        { rate: 1.5 }, { rate: -0.1 }, { rate: '1' },
        { delay_ms: -1 }, { delay_ms: 1.5 }, { delay_ms: 600001 },
        { delay: 100 }, [1, 2], '{not json', '"a string"',
      ];
      for (const body of invalid) {
        const res = await request(svc.adminPort, '/admin/fault', { method: 'POST', body });
        assert.equal(res.status, 400, `body ${JSON.stringify(body)}`);
        assert.equal(typeof res.body.error, 'string');
      }
      const current = await request(svc.adminPort, '/admin/fault');
      assert.equal(current.body.active, false);
    });
  });

  describe('/api/call', () => {
    it('relays downstream status and body', async () => {
      const url = `http://${LOCAL}:${peer.port}/api/greet`;
      const res = await request(svc.port, `/api/call?url=${encodeURIComponent(url)}`);
      assert.equal(res.status, 200);
      assert.equal(res.body.status, 200);
      assert.equal(res.body.pod, 'pod-a');
      assert.equal(res.body.version, 'v1');
      assert.match(res.body.headers['content-type'], /application\/json/);
      assert.deepEqual(res.body.body, {
        message: 'Hello from Microservice 1!', version: 'v2', pod: 'pod-b', method: 'GET', xfcc: null,
      });
    });

    it('relays a downstream error status with outer 200 (POST, method param)', async () => {
      await request(peer.adminPort, '/admin/fault', { method: 'POST', body: { status: 503 } });
      const url = `http://${LOCAL}:${peer.port}/api/greet`;
      const res = await request(svc.port, `/api/call?url=${encodeURIComponent(url)}&method=delete`, { method: 'POST' });
      assert.equal(res.status, 200);
      assert.equal(res.body.status, 503);
      assert.deepEqual(res.body.body, { error: 'injected fault', status: 503, pod: 'pod-b', version: 'v2' });
    });

    it('returns non-JSON downstream bodies as text', async () => {
      const srv = http.createServer((req, res) => res.end('plain text'));
      await new Promise((r) => srv.listen(0, LOCAL, r));
      try {
        const res = await request(svc.port, `/api/call?url=${encodeURIComponent(`http://${LOCAL}:${srv.address().port}/x`)}`);
        assert.equal(res.body.status, 200);
        assert.equal(res.body.body, 'plain text');
      } finally {
        srv.closeAllConnections();
        await new Promise((r) => srv.close(r));
      }
    });

    it('propagates trace headers and header= params, nothing else', async () => {
      const incoming = {
        'x-request-id': 'req-123',
        traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
        tracestate: 'congo=t61rcWkgMzE',
        'x-b3-traceid': '80f198ee56343ba864fe8b2a57d3eff7',
        'x-b3-spanid': 'e457b5a2e4d86bd1',
        'x-b3-parentspanid': '05e3ac9a4f6e3b90',
        'x-b3-sampled': '1',
        'x-b3-flags': '0',
        b3: '80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1',
        'x-ot-span-context': 'ctx',
        'x-not-a-trace-header': 'nope',
        authorization: 'Bearer secret',
      };
      const url = `http://${LOCAL}:${peer.port}/api/echo?q=1`;
      const qs = `url=${encodeURIComponent(url)}&header=${encodeURIComponent('X-Extra: one')}&header=${encodeURIComponent('x-other:two:three')}`;
      const res = await request(svc.port, `/api/call?${qs}`, { headers: incoming });
      assert.equal(res.status, 200);
      assert.equal(res.body.status, 200);
      const seen = res.body.body;
      assert.equal(seen.pod, 'pod-b');
      assert.equal(seen.method, 'GET');
      assert.equal(seen.path, '/api/echo?q=1');
      assert.equal(seen.headers['x-request-id'], 'req-123');
      assert.equal(seen.headers.traceparent, incoming.traceparent);
      for (const name of TRACE_HEADERS) assert.equal(seen.headers[name], incoming[name], name);
      assert.equal(seen.headers['x-extra'], 'one');
      assert.equal(seen.headers['x-other'], 'two:three');
      assert.equal(seen.headers['x-not-a-trace-header'], undefined);
      assert.equal(seen.headers.authorization, undefined);
      assert.equal(seen.headers.host, `${LOCAL}:${peer.port}`);
      assert.equal(seen.headers.connection, 'close', 'fresh connection per call');
    });

    it('with PROPAGATE_TRACE_HEADERS=false copies no trace header', async () => {
      const forgetful = await startLocal({ podName: 'pod-forgetful', propagateTraceHeaders: 'false' });
      try {
        const incoming = { 'x-request-id': 'req-9', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' };
        const url = `http://${LOCAL}:${peer.port}/api/echo`;
        const res = await request(forgetful.port, `/api/call?url=${encodeURIComponent(url)}`, { headers: incoming });
        assert.equal(res.body.status, 200);
        for (const name of TRACE_HEADERS) assert.equal(res.body.body.headers[name], undefined, name);
      } finally {
        await forgetful.close();
      }
    });

    it('refuses a PROPAGATE_TRACE_HEADERS that is not a boolean', async () => {
      await assert.rejects(startLocal({ propagateTraceHeaders: 'sometimes' }), /PROPAGATE_TRACE_HEADERS/);
    });

    it('connects to MESH_OUTBOUND_HOST while keeping the URL host as Host', async () => {
      const host = `microservice-1.sample.svc.cluster.local:${peer.port}`;
      const res = await request(mesh.port, `/api/call?url=${encodeURIComponent(`http://${host}/api/echo`)}`,
        { headers: { 'x-request-id': 'mesh-1' } });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.status, 200);
      assert.equal(res.body.pod, 'pod-mesh');
      assert.equal(res.body.body.pod, 'pod-b');
      assert.equal(res.body.body.headers.host, host);
      assert.equal(res.body.body.headers['x-request-id'], 'mesh-1');
    });

    it('answers 502 with ECONNREFUSED when the connection is refused', async () => {
      const port = await freePort();
      const res = await request(svc.port, `/api/call?url=${encodeURIComponent(`http://${LOCAL}:${port}/`)}`);
      assert.equal(res.status, 502);
      assert.equal(res.body.code, 'ECONNREFUSED');
      assert.equal(typeof res.body.error, 'string');
      assert.equal(res.body.pod, 'pod-a');
    });

    it('answers 502 with ETIMEDOUT after timeout_ms', async () => {
      const sockets = new Set();
      const blackhole = net.createServer((s) => sockets.add(s)); // accepts, never answers
      await new Promise((r) => blackhole.listen(0, LOCAL, r));
      try {
        const t0 = Date.now();
        const url = `http://${LOCAL}:${blackhole.address().port}/`;
        const res = await request(svc.port, `/api/call?timeout_ms=100&url=${encodeURIComponent(url)}`);
        assert.equal(res.status, 502);
        assert.equal(res.body.code, 'ETIMEDOUT');
        assert.ok(Date.now() - t0 >= 100);
      } finally {
        for (const s of sockets) s.destroy();
        await new Promise((r) => blackhole.close(r));
      }
    });

    it('rejects bad parameters with 400', async () => {
      for (const qs of ['', 'url=not-a-url', `url=${encodeURIComponent('https://example.invalid/')}`,
        `url=${encodeURIComponent(`http://${LOCAL}:1/`)}&timeout_ms=abc`,
        `url=${encodeURIComponent(`http://${LOCAL}:1/`)}&method=GE%20T`,
        `url=${encodeURIComponent(`http://${LOCAL}:1/`)}&header=nocolon`]) {
        const res = await request(svc.port, `/api/call?${qs}`);
        assert.equal(res.status, 400, qs);
        assert.equal(typeof res.body.error, 'string');
      }
    });
  });

  describe('process', () => {
    it('logs the start line from env and exits 0 promptly on SIGTERM', async () => {
      const child = spawn(process.execPath, [path.join(__dirname, '..', 'service.js')], {
        env: { ...process.env, PORT: '0', ADMIN_PORT: '0', HOST: LOCAL, VERSION: 'v9', POD_NAME: 'pod-env', MESH_OUTBOUND_HOST: '' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      const line = await new Promise((resolve, reject) => {
        // a deadline for a hung start, not a speed check: a busy machine may take seconds to start node
        const timer = setTimeout(() => reject(new Error(`no start line within 60 s; stdout so far: ${out}`)), 60000);
        child.stdout.on('data', (d) => {
          out += d;
          const nl = out.indexOf('\n');
          if (nl >= 0) { clearTimeout(timer); resolve(out.slice(0, nl)); }
        });
        child.once('exit', (code) => reject(new Error(`exited early with ${code}`)));
      });
      const m = line.match(/^microservice-1 v9 pod-env listening on 127\.0\.0\.1:(\d+) \(admin 127\.0\.0\.1:(\d+)\)$/);
      assert.ok(m, line);
      const health = await request(Number(m[2]), '/healthz');
      assert.deepEqual(health.body, { status: 'ok', pod: 'pod-env', version: 'v9' });

      // keep an idle keep-alive connection open: shutdown must not wait for it
      const agent = new http.Agent({ keepAlive: true });
      await new Promise((resolve, reject) => {
        http.get({ host: LOCAL, port: Number(m[1]), path: '/api/greet', agent }, (res) => {
          res.resume();
          res.on('end', resolve);
        }).on('error', reject);
      });

      // Promptly means: shutdown does not wait for the idle keep-alive connection, which the service
      // would otherwise hold for its 75 s keep-alive timeout. The bound sits far below that and far
      // above any start-up or exit delay of a busy machine, so slowness cannot flip it.
      const t0 = Date.now();
      const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
      child.kill('SIGTERM');
      let deadline;
      const result = await Promise.race([
        exited,
        new Promise((resolve) => { deadline = setTimeout(() => resolve(null), 30000); }),
      ]);
      clearTimeout(deadline);
      agent.destroy();
      if (result === null) child.kill('SIGKILL');
      assert.ok(result !== null, `no exit within 30 s of SIGTERM with an idle keep-alive connection open (keep-alive timeout 75 s); stdout: ${out}`);
      assert.equal(result.signal, null);
      assert.equal(result.code, 0);
      assert.ok(Date.now() - t0 < 30000);
    });
  });
});
