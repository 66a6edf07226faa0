/**
 * Forwarding to a real upstream (SPEC §4 "Forwarding"): client → gateway →
 * upstream, all over real sockets on 127.0.0.1. What passes through, what is
 * stripped or added, streaming both ways, and how upstream failures, slowness
 * and client aborts come out.
 */

import assert from "node:assert/strict";
import { createApp } from "../../src/http/app.ts";
import type { Clock } from "../../src/limits/clock.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import type { Forwarder } from "../../src/upstream/forwarder.ts";
import { HttpProxy } from "../../src/upstream/proxy.ts";
import { FetchProxy } from "../../src/upstream/fetch_proxy.ts";
import { RawProxy } from "../../src/upstream/raw_proxy.ts";
import { makeConfig, serveOnLoopback, testKey, type TestServer } from "../_helpers.ts";

const realClock: Clock = { nowMs: () => Date.now() };
const AUTH = `Bearer ${testKey("acme")}`;

type Handler = (request: Request, stop: Promise<void>) => Response | Promise<Response>;

interface RigOptions {
  timeoutMs?: number;
  upstreamUrl?: string;
  maxBodyBytes?: number;
}

/** Builds the forwarder under test. */
type MakeForwarder = (
  upstream: string,
  options: { timeoutMs: number; maxBodyBytes: number },
) => Forwarder & { close(): void };

/** Every forwarder runs every scenario below. */
const FORWARDERS: readonly (readonly [string, MakeForwarder])[] = [
  ["HttpProxy", (upstream, options) => new HttpProxy(upstream, options)],
  ["RawProxy", (upstream, options) => new RawProxy(upstream, options)],
  ["FetchProxy", (upstream, options) => new FetchProxy(upstream, options)],
];

/** Registers `name` once per forwarder; `fn` builds its rigs with that forwarder. */
function test(
  name: string,
  fn: (rig: (handler: Handler, options?: RigOptions) => Rig) => Promise<void>,
): void {
  for (const [label, make] of FORWARDERS) {
    Deno.test(`${label}: ${name}`, () =>
      fn((handler, options) => buildRig(make, handler, options)));
  }
}

interface Rig {
  gateway: TestServer;
  upstream: TestServer;
  limiter: Limiter;
  unexpected: unknown[];
  /** Settles when every gateway exchange so far has been sent or abandoned. */
  exchangesDone(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * An upstream serving `handler` and a gateway proxying to it. Handlers that
 * wait for something get `stop`, which settles when the rig is disposed, so
 * a failing test can still shut both servers down.
 */
function buildRig(make: MakeForwarder, handler: Handler, options: RigOptions = {}): Rig {
  const { timeoutMs = 5_000, maxBodyBytes = 1_048_576 } = options;
  const stop = Promise.withResolvers<void>();
  const upstream = serveOnLoopback((request) => handler(request, stop.promise));
  const limiter = new Limiter({ epochMs: realClock.nowMs() });
  const unexpected: unknown[] = [];
  const forwarder = make(options.upstreamUrl ?? upstream.url, { timeoutMs, maxBodyBytes });
  const app = createApp({
    config: makeConfig({ pro: { concurrency: 10 } }, { acme: "pro" }),
    limiter,
    clock: realClock,
    forwarder,
    maxBodyBytes,
    onUnexpectedError: (error) => unexpected.push(error),
  });
  const exchanges: Promise<unknown>[] = [];
  const gateway = serveOnLoopback((request, info) => {
    exchanges.push(info.completed.catch(() => {}));
    return app.fetch(request, info);
  });
  return {
    gateway,
    upstream,
    limiter,
    unexpected,
    exchangesDone: async () => {
      await Promise.all(exchanges);
    },
    [Symbol.asyncDispose]: async () => {
      stop.resolve();
      await gateway.close();
      forwarder.close();
      await upstream.close();
    },
  };
}

/** Resolves when `signal` aborts (true) or `stop` settles first (false). */
function abortedOr(signal: AbortSignal, stop: Promise<void>): Promise<boolean> {
  if (signal.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const onAbort = () => resolve(true);
    signal.addEventListener("abort", onAbort, { once: true });
    stop.then(() => {
      signal.removeEventListener("abort", onAbort);
      resolve(false);
    });
  });
}

/** What the echo upstream saw. */
interface Echo {
  method: string;
  path: string;
  search: string;
  headers: Record<string, string>;
  body: string;
}

async function echo(request: Request): Promise<Response> {
  const url = new URL(request.url);
  const seen: Echo = {
    method: request.method,
    path: url.pathname,
    search: url.search,
    headers: Object.fromEntries(request.headers),
    body: await request.text(),
  };
  return Response.json(seen);
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** `size` deterministic, non-repeating-looking bytes. */
function patternBytes(size: number, salt: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  let x = salt >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}

/** `bytes` as a stream of `chunkSize` chunks, produced on demand. */
function chunked(bytes: Uint8Array, chunkSize: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(bytes.slice(at, at + chunkSize));
      at += chunkSize;
      if (at >= bytes.length) controller.close();
    },
  }, { highWaterMark: 0 });
}

function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array<ArrayBuffer>> {
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

test("method, path, query, body and end-to-end headers pass through unchanged", async (rig) => {
  await using r = rig(echo);
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt?x=1&y=a%20b&x=2`, {
    method: "PATCH",
    headers: {
      authorization: AUTH,
      "content-type": "text/plain",
      "x-custom-in": "kept",
      "accept-language": "de",
      "x-request-id": "trace-42",
    },
    body: "hello upstream",
  });
  assert.equal(response.status, 200);
  const seen: Echo = await response.json();
  assert.equal(seen.method, "PATCH");
  assert.equal(seen.path, "/v1/monitor/chatgpt");
  assert.equal(seen.search, "?x=1&y=a%20b&x=2");
  assert.equal(seen.body, "hello upstream");
  assert.equal(seen.headers["content-type"], "text/plain");
  assert.equal(seen.headers["x-custom-in"], "kept");
  assert.equal(seen.headers["accept-language"], "de");
  assert.equal(seen.headers["x-account-id"], "acme");
  assert.equal(seen.headers["x-plan"], "pro");
  assert.equal(seen.headers["x-request-id"], "trace-42");
  assert.equal(response.headers.get("x-request-id"), "trace-42");
  assert.equal(seen.headers["x-forwarded-for"], "127.0.0.1");
});

test("Authorization and hop-by-hop request headers are not forwarded", async (rig) => {
  await using r = rig(echo);
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: {
      authorization: AUTH,
      connection: "keep-alive, X-Drop-Me",
      "x-drop-me": "named in Connection",
      "keep-alive": "timeout=5",
      te: "trailers",
      upgrade: "example/1",
      "proxy-authorization": "Basic cHJveHk6c2VjcmV0",
      "proxy-connection": "keep-alive",
      "x-keep-me": "end-to-end",
    },
    body: "{}",
  });
  const seen: Echo = await response.json();
  for (
    const name of [
      "authorization",
      "connection",
      "x-drop-me",
      "keep-alive",
      "te",
      "upgrade",
      "proxy-authorization",
      "proxy-connection",
    ]
  ) {
    assert.equal(seen.headers[name], undefined, `${name} reached the upstream`);
  }
  assert.equal(seen.headers["x-keep-me"], "end-to-end");
  assert.match(seen.headers["x-request-id"] ?? "", /^[0-9a-f-]{36}$/, "a generated id is added");
});

test("upstream status and headers pass back; hop-by-hop response headers are stripped", async (rig) => {
  await using r = rig(() =>
    new Response("created", {
      status: 201,
      headers: {
        "x-custom": "yes",
        "content-type": "text/plain",
        connection: "X-Upstream-Private",
        "x-upstream-private": "secret",
        "keep-alive": "timeout=5",
        "proxy-authenticate": "Basic",
        upgrade: "example/1",
        trailer: "x-checksum",
      },
    })
  );
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH },
  });
  assert.equal(response.status, 201);
  assert.equal(await response.text(), "created");
  assert.equal(response.headers.get("x-custom"), "yes");
  assert.equal(response.headers.get("content-type"), "text/plain");
  for (const name of ["x-upstream-private", "keep-alive", "proxy-authenticate", "upgrade"]) {
    assert.equal(response.headers.get(name), null, `${name} came back to the client`);
  }
  assert.notEqual(response.headers.get("connection"), "X-Upstream-Private");
  assert.equal(response.headers.get("x-concurrent-limit"), "10", "gateway headers are added");
  assert.equal(response.headers.get("x-ratelimit-limit"), "500");
});

test("a streamed (chunked) request body arrives intact", async (rig) => {
  await using r = rig(async (request) => {
    const bytes = await readAll(request.body ?? new ReadableStream());
    return Response.json({
      length: bytes.length,
      sha256: await sha256Hex(bytes),
      contentLength: request.headers.get("content-length"),
    });
  });
  const payload = patternBytes(700_000, 7);
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH, "content-type": "application/octet-stream" },
    body: chunked(payload, 16_384),
  });
  assert.equal(response.status, 200);
  const seen = await response.json();
  assert.equal(seen.length, payload.length);
  assert.equal(seen.sha256, await sha256Hex(payload));
  assert.equal(seen.contentLength, null, "sent chunked, not buffered");
});

test("a chunked request body over maxBodyBytes is 413 PAYLOAD_TOO_LARGE, not a 502", async (rig) => {
  await using r = rig(echo, { maxBodyBytes: 100_000 });
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH, "content-type": "application/octet-stream" },
    body: chunked(patternBytes(300_000, 3), 16_384),
  });
  const body = await response.json();
  assert.equal(response.status, 413, JSON.stringify(body));
  assert.equal(body.error.code, "PAYLOAD_TOO_LARGE");
  await r.exchangesDone();
  assert.equal(r.limiter.slotsInUse("acme"), 0);
  assert.deepEqual(r.unexpected, []);
});

test("a large streamed response body arrives intact and the slot is held until its end", async (rig) => {
  const payload = patternBytes(8 * 1024 * 1024, 11);
  await using r = rig(() =>
    new Response(chunked(payload, 65_536), {
      headers: { "content-type": "application/octet-stream" },
    })
  );
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH },
  });
  assert.equal(response.status, 200);
  assert.ok(response.body !== null);
  const reader = response.body.getReader();
  const first = await reader.read();
  assert.equal(first.done, false);
  assert.equal(r.limiter.slotsInUse("acme"), 1, "the slot is held while the body streams");
  const parts: Uint8Array[] = [first.value ?? new Uint8Array()];
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
    parts.push(chunk.value);
  }
  const received = concat(parts);
  assert.equal(received.length, payload.length);
  assert.equal(await sha256Hex(received), await sha256Hex(payload));
  await r.exchangesDone();
  assert.equal(r.limiter.slotsInUse("acme"), 0);
});

test("a gzip-encoded upstream response reaches the client intact", async (rig) => {
  const text = JSON.stringify({ answer: "compressible ".repeat(5000) });
  await using r = rig(() =>
    new Response(new Blob([text]).stream().pipeThrough(new CompressionStream("gzip")), {
      headers: { "content-type": "application/json", "content-encoding": "gzip" },
    })
  );
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH },
  });
  assert.equal(response.status, 200);
  assert.equal(await response.text(), text);
});

test("an unreachable upstream (a closed port) is 502 UPSTREAM_ERROR", async (rig) => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = listener.addr.port;
  listener.close();
  await using r = rig(echo, { upstreamUrl: `http://127.0.0.1:${closedPort}` });
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH },
    body: "{}",
  });
  assert.equal(response.status, 502);
  const body = await response.json();
  assert.equal(body.success, false);
  assert.equal(body.error.code, "UPSTREAM_ERROR");
  assert.equal(response.headers.get("x-ratelimit-limit"), "500");
  await r.exchangesDone();
  assert.equal(r.limiter.slotsInUse("acme"), 0);
  assert.deepEqual(r.unexpected, []);
});

test("an upstream slower than timeoutMs is 504 UPSTREAM_TIMEOUT and its call is cancelled", async (rig) => {
  const upstreamCancelled = Promise.withResolvers<boolean>();
  await using r = rig(async (request, stop) => {
    upstreamCancelled.resolve(await abortedOr(request.signal, stop));
    return new Response("too late");
  }, { timeoutMs: 150 });
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH },
    body: "{}",
  });
  assert.equal(response.status, 504);
  const body = await response.json();
  assert.equal(body.error.code, "UPSTREAM_TIMEOUT");
  assert.equal(await upstreamCancelled.promise, true, "the upstream saw the request go away");
  await r.exchangesDone();
  assert.equal(r.limiter.slotsInUse("acme"), 0);
});

test("an upstream that stalls mid-body is cut at timeoutMs and the slot comes back", async (rig) => {
  await using r = rig((_request, stop) =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode("partial"));
        },
        async pull(controller) {
          await stop;
          controller.close();
        },
      }, { highWaterMark: 0 }),
    ), { timeoutMs: 150 });
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH },
  });
  assert.equal(response.status, 200);
  await assert.rejects(response.text(), "the body breaks off instead of hanging");
  await r.exchangesDone();
  assert.equal(r.limiter.slotsInUse("acme"), 0);
});

test("an upstream 500 passes through as a 500 with the upstream's body", async (rig) => {
  await using r = rig(() => Response.json({ upstream: "exploded" }, { status: 500 }));
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH },
  });
  assert.equal(response.status, 500);
  assert.deepEqual(await response.json(), { upstream: "exploded" });
  assert.deepEqual(r.unexpected, [], "not an error of the gateway");
});

test("a non-monitor /v1 path is forwarded when an upstream is configured", async (rig) => {
  await using r = rig(echo);
  const response = await fetch(`${r.gateway.url}/v1/anything?x=1`, {
    headers: { authorization: AUTH },
  });
  assert.equal(response.status, 200);
  const seen: Echo = await response.json();
  assert.equal(seen.method, "GET");
  assert.equal(seen.path, "/v1/anything");
  assert.equal(seen.search, "?x=1");
  assert.equal(seen.headers["x-account-id"], "acme");
  assert.equal(response.headers.get("x-ratelimit-limit"), "500");
  assert.equal(response.headers.get("x-concurrent-limit"), null, "no slot outside monitor");
});

test("an upstream base path is prefixed to the forwarded path", async (rig) => {
  await using upstream = rig(echo);
  await using r = rig(echo, { upstreamUrl: `${upstream.upstream.url}/base/` });
  const response = await fetch(`${r.gateway.url}/v1/monitor/gemini?q=1`, {
    method: "POST",
    headers: { authorization: AUTH },
  });
  const seen: Echo = await response.json();
  assert.equal(seen.path, "/base/v1/monitor/gemini");
  assert.equal(seen.search, "?q=1");
});

test("a client abort before the headers cancels the upstream request", async (rig) => {
  const arrived = Promise.withResolvers<void>();
  const upstreamCancelled = Promise.withResolvers<boolean>();
  await using r = rig(async (request, stop) => {
    arrived.resolve();
    upstreamCancelled.resolve(await abortedOr(request.signal, stop));
    return new Response("nobody is listening");
  });
  const abort = new AbortController();
  const call = fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH },
    body: "{}",
    signal: abort.signal,
  });
  await arrived.promise;
  assert.equal(r.limiter.slotsInUse("acme"), 1);
  abort.abort();
  await assert.rejects(call);
  assert.equal(await upstreamCancelled.promise, true, "the upstream's request.signal fired");
  await r.exchangesDone();
  assert.equal(r.limiter.slotsInUse("acme"), 0);
  assert.equal(r.limiter.leases.stats().released, 1);
});

test("a client abort mid-body cancels the upstream response", async (rig) => {
  const upstreamCancelled = Promise.withResolvers<boolean>();
  await using r = rig((request, stop) =>
    new Response(
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode("first chunk"));
        },
        async pull() {
          upstreamCancelled.resolve(await abortedOr(request.signal, stop));
        },
        cancel() {
          upstreamCancelled.resolve(true);
        },
      }, { highWaterMark: 0 }),
    )
  );
  const abort = new AbortController();
  const response = await fetch(`${r.gateway.url}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: AUTH },
    signal: abort.signal,
  });
  assert.ok(response.body !== null);
  const reader = response.body.getReader();
  const first = await reader.read();
  assert.equal(new TextDecoder().decode(first.value), "first chunk");
  abort.abort();
  await reader.cancel().catch(() => {});
  assert.equal(await upstreamCancelled.promise, true, "the upstream saw the client go away");
  await r.exchangesDone();
  assert.equal(r.limiter.slotsInUse("acme"), 0);
});
