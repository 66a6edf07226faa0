/**
 * Candidates for the forwarding client (issue: "measure, in one run"), each
 * doing one GET round trip to the same upstream (bare `Deno.serve` in a
 * separate process, so client cost is not mixed with server cost), 16 in
 * flight per iteration batch. Plus sluice's forwarders end to end
 * (`FetchProxy`, `HttpProxy` = node:http, `RawProxy` = pooled HTTP/1.1 over
 * Deno.connect), which add header rules, deadlines and body wrapping on top.
 *
 *   deno bench -A --unstable-net bench/forward_bench.ts
 */

import http from "node:http";
import { Pool } from "undici";
import { FetchProxy } from "../src/upstream/fetch_proxy.ts";
import { HttpProxy } from "../src/upstream/proxy.ts";
import { RawProxy } from "../src/upstream/raw_proxy.ts";

const IN_FLIGHT = 16;

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

const port = freePort();
const upstream = new Deno.Command(Deno.execPath(), {
  args: [
    "run",
    "-A",
    "--unstable-net",
    new URL("./_bare_server.ts", import.meta.url).pathname,
    String(port),
    "1",
  ],
  stdout: "piped",
  stderr: "null",
}).spawn();
const reader = upstream.stdout.pipeThrough(new TextDecoderStream()).getReader();
while (!((await reader.read()).value ?? "").includes("listening")) {
  // wait for the upstream's "listening" line
}
reader.releaseLock();
globalThis.addEventListener("unload", () => upstream.kill("SIGKILL"));
const base = `http://127.0.0.1:${port}`;

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const pool = new Pool(base, { connections: 64 });
const fetchProxy = new FetchProxy(base);
const nodeProxy = new HttpProxy(base);
const rawProxy = new RawProxy(base);
const context = {
  accountId: "acme",
  planName: "bench",
  requestId: "bench",
  clientAddress: "127.0.0.1",
  signal: new AbortController().signal,
};

/** A minimal pooled HTTP/1.1 GET over Deno.connect: content-length bodies only. */
const idle: Deno.TcpConn[] = [];
const request = new TextEncoder().encode(`GET /x HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n\r\n`);
async function rawGet(): Promise<void> {
  const conn = idle.pop() ?? await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(request);
  const buffer = new Uint8Array(4096);
  let have = 0;
  for (;;) {
    const n = await conn.read(buffer.subarray(have));
    if (n === null) throw new Error("closed");
    have += n;
    const text = new TextDecoder().decode(buffer.subarray(0, have));
    const headEnd = text.indexOf("\r\n\r\n");
    if (headEnd < 0) continue;
    const length = Number(/content-length:\s*(\d+)/i.exec(text)?.[1] ?? "0");
    if (have >= headEnd + 4 + length) break;
  }
  idle.push(conn);
}

function nodeGet(): Promise<void> {
  return new Promise((resolve, reject) => {
    http.get(`${base}/x`, { agent }, (res) => {
      res.on("data", () => {});
      res.on("end", () => resolve());
    }).on("error", reject);
  });
}

function batch(one: () => Promise<unknown>): () => Promise<void> {
  return async () => {
    await Promise.all(Array.from({ length: IN_FLIGHT }, one));
  };
}

const forwardRequest = () => new Request(`${base}/x`, { headers: { authorization: "Bearer x" } });

Deno.bench({
  group: "client",
  name: "fetch",
  baseline: true,
  fn: batch(async () => (await fetch(`${base}/x`)).arrayBuffer()),
});
Deno.bench({ group: "client", name: "node:http keep-alive agent", fn: batch(nodeGet) });
Deno.bench({
  group: "client",
  name: "undici Pool",
  fn: batch(async () => (await pool.request({ path: "/x", method: "GET" })).body.arrayBuffer()),
});
Deno.bench({
  group: "client",
  name: "raw HTTP/1.1 over Deno.connect (minimal)",
  fn: batch(rawGet),
});

Deno.bench({
  group: "sluice forwarder",
  name: "FetchProxy (fetch)",
  baseline: true,
  fn: batch(async () => (await fetchProxy.forward(forwardRequest(), context)).arrayBuffer()),
});
Deno.bench({
  group: "sluice forwarder",
  name: "HttpProxy (node:http)",
  fn: batch(async () => (await nodeProxy.forward(forwardRequest(), context)).arrayBuffer()),
});
Deno.bench({
  group: "sluice forwarder",
  name: "RawProxy (Deno.connect pool)",
  fn: batch(async () => (await rawProxy.forward(forwardRequest(), context)).arrayBuffer()),
});
