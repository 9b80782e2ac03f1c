'use strict';

// microservice-1: a small Express service used by meshproof as the workload
// behind Istio sidecars. Besides the classic greeting endpoint it can make
// outbound calls (to exercise egress, mTLS and tracing through the mesh) and
// exposes an admin API on a separate port (never routed by the mesh) for
// health checks and application-level fault injection.

const http = require('node:http');
const os = require('node:os');
const express = require('express');

const SERVICE_NAME = 'microservice-1';
const GREETING = 'Hello from Microservice 1!';

// Incoming headers copied onto outbound requests made by /api/call, so that
// Envoy can stitch the spans of both hops into one trace.
const TRACE_HEADERS = Object.freeze([
  'x-request-id',
  'traceparent',
  'tracestate',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
  'x-b3-flags',
  'b3',
  'x-ot-span-context',
]);

const DEFAULT_CALL_TIMEOUT_MS = 10000;
const MAX_TIMEOUT_MS = 600000;
const MAX_DELAY_MS = 600000;
const MAX_DOWNSTREAM_BODY_BYTES = 8 * 1024 * 1024;
const FAULT_FIELDS = Object.freeze(['status', 'rate', 'delay_ms']);

// Node closes idle keep-alive connections after 5 s by default. Behind an
// Envoy sidecar (whose upstream idle timeout is much longer) that races with
// Envoy reusing the connection and shows up as sporadic 503 "upstream
// connect error ... connection termination". Keep idle connections longer.
const KEEP_ALIVE_TIMEOUT_MS = 75000;
const HEADERS_TIMEOUT_MS = 76000;

function hasOwn(obj, key) {
  return Object.prototype.hasOwnProperty.call(obj, key);
}

// Option value if given (null counts as given), else env var if non-empty,
// else the fallback.
function setting(options, key, envName, fallback) {
  if (hasOwn(options, key) && options[key] !== undefined) return options[key];
  const fromEnv = process.env[envName];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  return fallback;
}

function parsePort(value, name) {
  const port = typeof value === 'number' ? value
    : /^\d+$/.test(String(value).trim()) ? Number(String(value).trim()) : NaN;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`invalid ${name}: ${JSON.stringify(value)} (expected an integer 0..65535)`);
  }
  return port;
}

// "false"/"0"/"no"/"off" (any case) or false turn a flag off; anything else leaves it on.
function parseFlag(value, name) {
  if (typeof value === 'boolean') return value;
  const text = String(value).trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(text)) return true;
  if (['false', '0', 'no', 'off'].includes(text)) return false;
  throw new Error(`invalid ${name}: ${JSON.stringify(value)} (expected true or false)`);
}

function resolveConfig(options) {
  const host = String(setting(options, 'host', 'HOST', '0.0.0.0'));
  const meshOutboundHost = setting(options, 'meshOutboundHost', 'MESH_OUTBOUND_HOST', null);
  const log = hasOwn(options, 'log') ? options.log : console.log;
  return {
    port: parsePort(setting(options, 'port', 'PORT', 3000), 'PORT'),
    host,
    adminPort: parsePort(setting(options, 'adminPort', 'ADMIN_PORT', 3001), 'ADMIN_PORT'),
    adminHost: String(setting(options, 'adminHost', 'ADMIN_HOST', host)),
    version: String(setting(options, 'version', 'VERSION', 'v1')),
    podName: String(setting(options, 'podName', 'POD_NAME', os.hostname())),
    meshOutboundHost: meshOutboundHost === null ? null : String(meshOutboundHost),
    propagateTraceHeaders: parseFlag(
      setting(options, 'propagateTraceHeaders', 'PROPAGATE_TRACE_HEADERS', true), 'PROPAGATE_TRACE_HEADERS'),
    adminFault: parseFlag(setting(options, 'adminFault', 'ADMIN_FAULT', true), 'ADMIN_FAULT'),
    log: typeof log === 'function' ? log : () => {},
  };
}

function httpError(status, message) {
  const err = new Error(message);
  err.status = status;
  return err;
}

// Validates a POST /admin/fault body; returns {status, rate, delay_ms}.
function parseFault(body) {
  if (body === undefined || body === null) body = {};
  if (typeof body !== 'object' || Array.isArray(body)) {
    throw httpError(400, 'body must be a JSON object');
  }
  for (const key of Object.keys(body)) {
    if (!FAULT_FIELDS.includes(key)) {
      throw httpError(400, `unknown field "${key}" (allowed: ${FAULT_FIELDS.join(', ')})`);
    }
  }
  const status = hasOwn(body, 'status') ? body.status : 503;
  if (status !== null && !(Number.isInteger(status) && status >= 100 && status <= 599)) {
    throw httpError(400, 'status must be an integer 100..599 or null');
  }
  const rate = hasOwn(body, 'rate') ? body.rate : 1.0;
  if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0 || rate > 1) {
    throw httpError(400, 'rate must be a number 0..1');
  }
  const delayMs = hasOwn(body, 'delay_ms') ? body.delay_ms : 0;
  if (!Number.isInteger(delayMs) || delayMs < 0 || delayMs > MAX_DELAY_MS) {
    throw httpError(400, `delay_ms must be an integer 0..${MAX_DELAY_MS}`);
  }
  return { status, rate, delay_ms: delayMs };
}

function toArray(value) {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

// Builds the http.request options for /api/call from the incoming request.
function buildOutbound(req, cfg) {
  const q = req.query || {};
  const rawUrl = q.url;
  if (typeof rawUrl !== 'string' || rawUrl === '') {
    throw httpError(400, 'missing "url" query parameter');
  }
  let url;
  try {
    url = new URL(rawUrl);
  } catch {
    throw httpError(400, `invalid url: ${rawUrl}`);
  }
  if (url.protocol !== 'http:') {
    throw httpError(400, `unsupported url scheme "${url.protocol}" (only http: is supported)`);
  }

  const rawMethod = q.method === undefined ? 'GET' : q.method;
  if (typeof rawMethod !== 'string' || !/^[A-Za-z]+$/.test(rawMethod)) {
    throw httpError(400, 'method must be a single alphabetic token such as GET or POST');
  }
  const method = rawMethod.toUpperCase();

  let timeoutMs = DEFAULT_CALL_TIMEOUT_MS;
  if (q.timeout_ms !== undefined) {
    timeoutMs = typeof q.timeout_ms === 'string' && /^\d+$/.test(q.timeout_ms) ? Number(q.timeout_ms) : NaN;
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_TIMEOUT_MS) {
      throw httpError(400, `timeout_ms must be an integer 1..${MAX_TIMEOUT_MS}`);
    }
  }

  const headers = { host: url.host };
  // PROPAGATE_TRACE_HEADERS=false imitates an app that forgets to propagate: Envoy then starts
  // a new trace for the outbound call (the tracing suite's negative control).
  for (const name of cfg.propagateTraceHeaders ? TRACE_HEADERS : []) {
    const value = req.headers[name];
    if (value !== undefined) headers[name] = value;
  }
  for (const spec of toArray(q.header)) {
    const idx = typeof spec === 'string' ? spec.indexOf(':') : -1;
    if (idx <= 0) throw httpError(400, `invalid header parameter ${JSON.stringify(spec)} (expected Name:Value)`);
    const name = spec.slice(0, idx).trim();
    const value = spec.slice(idx + 1).trim();
    try {
      http.validateHeaderName(name);
      http.validateHeaderValue(name, value);
    } catch (err) {
      throw httpError(400, `invalid header parameter ${JSON.stringify(spec)}: ${err.message}`);
    }
    headers[name.toLowerCase()] = value;
  }

  // With MESH_OUTBOUND_HOST the TCP connection goes to the sidecar's egress
  // listener; the Host header still names the real destination.
  const connectHost = cfg.meshOutboundHost || url.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = url.port ? Number(url.port) : 80;
  return {
    url: url.href,
    method,
    timeoutMs,
    options: {
      host: connectHost,
      port,
      method,
      path: `${url.pathname}${url.search}`,
      headers,
      agent: false, // fresh connection per call, no pooling
    },
  };
}

function parseBody(buffer) {
  const text = buffer.toString('utf8');
  if (text.length > 0) {
    try {
      return JSON.parse(text);
    } catch {
      // not JSON: return as text
    }
  }
  return text;
}

function createApp(ctx) {
  const { cfg } = ctx;
  const app = express();
  app.set('x-powered-by', false);
  app.set('etag', false);

  const identity = () => ({ pod: cfg.podName, version: cfg.version });

  app.get('/healthz', (req, res) => {
    res.json({ status: 'ok', ...identity() });
  });

  // Counting and fault injection for everything under /api/.
  app.use('/api', (req, res, next) => {
    ctx.stats.requests += 1;
    const fault = ctx.fault;
    if (!fault || !(Math.random() < fault.rate)) return next();
    ctx.stats.faults += 1;
    const respond = () => {
      if (fault.status === null) return next();
      res.status(fault.status).json({ error: 'injected fault', status: fault.status, ...identity() });
    };
    if (fault.delay_ms <= 0) return respond();
    const timer = setTimeout(() => {
      ctx.timers.delete(timer);
      respond();
    }, fault.delay_ms);
    ctx.timers.add(timer);
    res.once('close', () => {
      clearTimeout(timer);
      ctx.timers.delete(timer);
    });
  });

  // Every method answers 200: deciding what is denied is the mesh's job.
  app.all('/api/greet', (req, res) => {
    res.json({
      message: GREETING,
      ...identity(),
      method: req.method,
      xfcc: req.get('x-forwarded-client-cert') ?? null,
    });
  });

  // Echoes what the workload received (after the sidecar), for assertions on
  // headers such as Host, x-forwarded-client-cert or propagated trace ids.
  app.all('/api/echo', (req, res) => {
    res.json({
      method: req.method,
      path: req.originalUrl,
      headers: req.headers,
      ...identity(),
    });
  });

  const handleCall = (req, res) => {
    let target;
    try {
      target = buildOutbound(req, cfg);
    } catch (err) {
      res.status(err.status || 400).json({ error: err.message, ...identity() });
      return;
    }
    const started = Date.now();
    const outReq = http.request(target.options);
    ctx.outbound.add(outReq);
    let finished = false;
    let timedOut = false;

    const finish = (status, payload) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      ctx.outbound.delete(outReq);
      res.status(status).json({
        ...payload,
        ...identity(),
        url: target.url,
        method: target.method,
        elapsed_ms: Date.now() - started,
      });
    };
    const fail = (err) => {
      if (timedOut) {
        finish(502, { error: `timeout after ${target.timeoutMs} ms`, code: 'ETIMEDOUT' });
      } else {
        finish(502, { error: err.message, code: err.code || null });
      }
      outReq.destroy();
    };

    const timer = setTimeout(() => {
      timedOut = true;
      fail(new Error('timeout'));
    }, target.timeoutMs);

    outReq.on('error', fail);
    outReq.on('response', (down) => {
      const chunks = [];
      let size = 0;
      down.on('data', (chunk) => {
        size += chunk.length;
        if (size > MAX_DOWNSTREAM_BODY_BYTES) {
          const err = new Error(`downstream body larger than ${MAX_DOWNSTREAM_BODY_BYTES} bytes`);
          err.code = 'EBODYTOOLARGE';
          fail(err);
          return;
        }
        chunks.push(chunk);
      });
      down.on('end', () => {
        finish(200, {
          status: down.statusCode,
          headers: down.headers,
          body: parseBody(Buffer.concat(chunks)),
        });
      });
      down.on('error', fail);
      down.on('close', () => {
        if (!down.complete) {
          const err = new Error('downstream closed the connection before the response completed');
          err.code = 'ECONNRESET';
          fail(err);
        }
      });
    });

    // Caller went away: abandon the outbound request.
    res.once('close', () => {
      if (!finished) {
        finished = true;
        clearTimeout(timer);
        ctx.outbound.delete(outReq);
        outReq.destroy();
      }
    });
    outReq.end();
  };

  app.route('/api/call')
    .get(handleCall)
    .post(handleCall)
    .all((req, res) => {
      res.set('Allow', 'GET, POST').status(405).json({ error: 'method not allowed', ...identity() });
    });

  app.use((req, res) => {
    res.status(404).json({ error: 'not found', path: req.path, ...identity() });
  });
  app.use(errorHandler);
  return app;
}

function createAdminApp(ctx) {
  const { cfg } = ctx;
  const app = express();
  app.set('x-powered-by', false);
  app.set('etag', false);

  const counters = () => ({ requests: ctx.stats.requests, faults: ctx.stats.faults });
  const describeFault = () => (ctx.fault
    ? { active: true, ...ctx.fault, ...counters(), pod: cfg.podName, version: cfg.version }
    : { active: false, ...counters(), pod: cfg.podName, version: cfg.version });

  app.get('/healthz', (req, res) => {
    res.json({ status: 'ok', pod: cfg.podName, version: cfg.version });
  });

  // ADMIN_FAULT=false leaves /admin/fault out (404), like a service with no fault hook of its own.
  if (cfg.adminFault) {
    app.get('/admin/fault', (req, res) => {
      res.json(describeFault());
    });

    // Any content type is parsed as JSON; an empty body means all defaults.
    app.post('/admin/fault', express.json({ type: () => true, limit: '16kb' }), (req, res) => {
      const fault = parseFault(req.body);
      ctx.fault = { ...fault, since: new Date().toISOString() };
      res.json(describeFault());
    });

    app.delete('/admin/fault', (req, res) => {
      ctx.fault = null;
      res.json({ active: false });
    });
  }

  app.get('/admin/stats', (req, res) => {
    res.json({ ...counters(), pod: cfg.podName });
  });

  app.delete('/admin/stats', (req, res) => {
    ctx.stats.requests = 0;
    ctx.stats.faults = 0;
    res.json({ ...counters(), pod: cfg.podName });
  });

  app.use((req, res) => {
    res.status(404).json({ error: 'not found', path: req.path });
  });
  app.use(errorHandler);
  return app;
}

// eslint-disable-next-line no-unused-vars
function errorHandler(err, req, res, next) {
  const status = Number.isInteger(err.status) && err.status >= 400 && err.status <= 599 ? err.status : 500;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.status(status).json({ error: status === 500 && !err.expose ? `internal error: ${err.message}` : err.message });
}

function listen(server, port, host) {
  return new Promise((resolve, reject) => {
    const onError = (err) => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function closeServer(server) {
  return new Promise((resolve) => {
    if (!server.listening) {
      server.closeAllConnections();
      resolve();
      return;
    }
    server.close(() => resolve());
    server.closeAllConnections(); // also drops idle keep-alive sockets
  });
}

function createServer(app) {
  const server = http.createServer(app);
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  return server;
}

/**
 * Starts the app and admin servers.
 *
 * options (all optional; each falls back to its env var, then its default):
 *   port (PORT, 3000), host (HOST, '0.0.0.0'), adminPort (ADMIN_PORT, 3001),
 *   adminHost (ADMIN_HOST, = host), version (VERSION, 'v1'),
 *   podName (POD_NAME, os.hostname()), meshOutboundHost (MESH_OUTBOUND_HOST,
 *   null = connect directly), log (function for the start line; default
 *   console.log, null to silence).
 *
 * Resolves to { server, adminServer, app, adminApp, port, adminPort, config,
 * state, close } once both servers listen; close() returns a promise.
 */
async function start(options = {}) {
  const cfg = resolveConfig(options);
  const ctx = {
    cfg,
    fault: null,
    stats: { requests: 0, faults: 0 },
    timers: new Set(),
    outbound: new Set(),
  };
  const app = createApp(ctx);
  const adminApp = createAdminApp(ctx);
  const server = createServer(app);
  const adminServer = createServer(adminApp);

  await listen(server, cfg.port, cfg.host);
  try {
    await listen(adminServer, cfg.adminPort, cfg.adminHost);
  } catch (err) {
    await closeServer(server);
    throw err;
  }

  const port = server.address().port;
  const adminPort = adminServer.address().port;
  cfg.log(`${SERVICE_NAME} ${cfg.version} ${cfg.podName} listening on ${cfg.host}:${port} (admin ${cfg.adminHost}:${adminPort})`);

  let closing = null;
  const close = () => {
    if (!closing) {
      for (const timer of ctx.timers) clearTimeout(timer);
      ctx.timers.clear();
      for (const outReq of ctx.outbound) outReq.destroy();
      ctx.outbound.clear();
      closing = Promise.all([closeServer(server), closeServer(adminServer)]).then(() => undefined);
    }
    return closing;
  };

  const { log, ...config } = cfg;
  return { server, adminServer, app, adminApp, port, adminPort, config: { ...config, port, adminPort }, state: ctx, close };
}

module.exports = { start, parseFault, TRACE_HEADERS, SERVICE_NAME, GREETING };

if (require.main === module) {
  start().then((svc) => {
    let stopping = false;
    const shutdown = (signal) => {
      if (stopping) return;
      stopping = true;
      console.log(`${SERVICE_NAME} received ${signal}, shutting down`);
      const force = setTimeout(() => process.exit(0), 900);
      force.unref();
      svc.close().then(() => process.exit(0), () => process.exit(0));
    };
    process.on('SIGTERM', () => shutdown('SIGTERM'));
    process.on('SIGINT', () => shutdown('SIGINT'));
  }, (err) => {
    console.error(`${SERVICE_NAME} failed to start: ${err.message}`);
    process.exit(1);
  });
}
