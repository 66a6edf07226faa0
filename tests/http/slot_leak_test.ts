/**
 * The slot-leak test (SPEC §2.2: "No path may leak a slot or release one
 * twice"). Over real sockets, 1,200 monitor calls go through the gateway to
 * an upstream that randomly answers fast, drips a slow chunked body, fails
 * with 500, hangs past the gateway's upstream timeout (before or after the
 * headers), or closes the connection mid-body; clients randomly read to the
 * end, abort mid-body, or abort before the headers. Afterwards every slot
 * must be back, each exactly once, and none by the leak reclaimer.
 */

import assert from "node:assert/strict";
import { createApp } from "../../src/http/app.ts";
import type { Clock } from "../../src/limits/clock.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import { HttpProxy } from "../../src/upstream/proxy.ts";
import { RawProxy } from "../../src/upstream/raw_proxy.ts";
import { makeConfig, seededRandom, serveOnLoopback, testKey } from "../_helpers.ts";

/** Set to a number printed by a failing run to replay its choices. */
const FIXED_SEED: number | undefined = undefined;
const REQUESTS = 1200;
const PARALLEL = 50;
const UPSTREAM_TIMEOUT_MS = 200;
/** A call still running this long after it started is stuck: cut it and count it. */
const CALL_DEADLINE_MS = 5_000;

const UPSTREAM_MODES = ["fast", "slow", "error", "hang", "stall", "cut"] as const;
type UpstreamMode = typeof UPSTREAM_MODES[number];
const CLIENT_MODES = ["read", "read", "read", "abortMidBody", "abortBeforeHeaders"] as const;
type ClientMode = typeof CLIENT_MODES[number];

function pick<T>(random: () => number, items: readonly T[]): T {
  const item = items[Math.floor(random() * items.length)];
  if (item === undefined) throw new Error("empty choice");
  return item;
}

/** Resolves when `signal` aborts or `stop` settles, whichever is first. */
function abortedOr(signal: AbortSignal, stop: Promise<void>): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      signal.removeEventListener("abort", done);
      resolve();
    };
    signal.addEventListener("abort", done, { once: true });
    stop.then(done);
  });
}

const CHUNK = new TextEncoder().encode("x".repeat(1024) + "\n");

/**
 * The upstream's behaviours, chosen by the client through `?mode=`. Hanging
 * handlers end when the gateway gives up on them (their request's signal
 * fires) or, as a backstop so the server can always shut down, at `stop`.
 */
function upstreamHandler(stop: Promise<void>, arrivals: Map<string, () => void>) {
  return async function upstream(request: Request): Promise<Response> {
    const id = request.headers.get("x-request-id") ?? "";
    arrivals.get(id)?.();
    const mode = new URL(request.url).searchParams.get("mode") as UpstreamMode | null;
    await request.body?.cancel();
    switch (mode) {
      case "fast":
        return Response.json({ success: true, result: { text: "fast", sources: [] } });
      case "error":
        return Response.json({ success: false, message: "upstream broke" }, { status: 500 });
      case "hang":
        await abortedOr(request.signal, stop);
        return new Response("too late");
      case "slow":
        return new Response(drip(5, 5));
      case "stall":
        return new Response(
          new ReadableStream<Uint8Array>({
            start(controller) {
              controller.enqueue(CHUNK);
            },
            async pull(controller) {
              await abortedOr(request.signal, stop);
              controller.close();
            },
          }, { highWaterMark: 0 }),
        );
      case "cut":
        return new Response(
          new ReadableStream<Uint8Array>({
            start(controller) {
              controller.enqueue(CHUNK);
            },
            pull(controller) {
              controller.error(new Error("upstream closes mid-body"));
            },
          }, { highWaterMark: 0 }),
        );
      default:
        return new Response("unknown mode", { status: 400 });
    }
  };
}

/** `chunks` chunks, `gapMs` apart: an upstream that is slow but within the timeout. */
function drip(chunks: number, gapMs: number): ReadableStream<Uint8Array> {
  let sent = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (sent > 0) await new Promise((resolve) => timer = setTimeout(resolve, gapMs));
      controller.enqueue(CHUNK);
      if (++sent === chunks) controller.close();
    },
    cancel() {
      clearTimeout(timer);
    },
  }, { highWaterMark: 0 });
}

interface Tally {
  statuses: Record<string, number>;
  clientErrors: number;
  stuck: string[];
  combos: Record<string, number>;
}

const FORWARDERS = [
  ["node:http", (url: string) => new HttpProxy(url, { timeoutMs: UPSTREAM_TIMEOUT_MS })],
  ["raw HTTP/1.1 pool", (url: string) => new RawProxy(url, { timeoutMs: UPSTREAM_TIMEOUT_MS })],
] as const;

for (const [clientName, makeForwarder] of FORWARDERS) {
  Deno.test(`no slot leaks or double releases over 1,200 randomly failing monitor calls (${clientName})`, async () => {
    const seed = FIXED_SEED ?? (crypto.getRandomValues(new Uint32Array(1))[0] ?? 1);
    console.log(`slot_leak_test seed: ${seed}`);
    const random = seededRandom(seed);

    const stop = Promise.withResolvers<void>();
    const arrivals = new Map<string, () => void>();
    const upstream = serveOnLoopback(upstreamHandler(stop.promise, arrivals));

    const clock: Clock = { nowMs: () => Date.now() };
    const limiter = new Limiter({ epochMs: clock.nowMs(), leaseMs: 30_000 });
    const forwarder = makeForwarder(upstream.url);
    const unexpected: unknown[] = [];
    const app = createApp({
      config: makeConfig({
        wide: { concurrency: 1000, rateLimit: { requests: 100_000, windowMs: 1000 } },
      }, { acme: "wide" }),
      limiter,
      clock,
      forwarder,
      onUnexpectedError: (error, requestId) => unexpected.push({ requestId, error }),
    });
    // Every gateway exchange, settled when its response has been sent or abandoned.
    const exchanges: Promise<unknown>[] = [];
    const gateway = serveOnLoopback((request, info) => {
      exchanges.push(info.completed.catch(() => {}));
      return app.fetch(request, info);
    });

    const tally: Tally = { statuses: {}, clientErrors: 0, stuck: [], combos: {} };
    async function call(i: number, mode: UpstreamMode, clientMode: ClientMode): Promise<void> {
      const id = `leak-${seed}-${i}`;
      const abort = new AbortController();
      const deadline = AbortSignal.timeout(CALL_DEADLINE_MS);
      if (clientMode === "abortBeforeHeaders") arrivals.set(id, () => abort.abort());
      tally.combos[`${mode}/${clientMode}`] = (tally.combos[`${mode}/${clientMode}`] ?? 0) + 1;
      try {
        const response = await fetch(`${gateway.url}/v1/monitor/chatgpt?mode=${mode}`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${testKey("acme")}`,
            "content-type": "application/json",
            "x-request-id": id,
          },
          body: JSON.stringify({ prompt: `request ${i}` }),
          signal: AbortSignal.any([abort.signal, deadline]),
        });
        tally.statuses[response.status] = (tally.statuses[response.status] ?? 0) + 1;
        if (clientMode === "abortMidBody" && response.body !== null) {
          const reader = response.body.getReader();
          await reader.read();
          abort.abort();
          await reader.cancel().catch(() => {});
        } else {
          await response.arrayBuffer();
        }
      } catch {
        // Aborted by us, or the body broke because the upstream did: both expected.
        tally.clientErrors++;
        if (deadline.aborted) tally.stuck.push(`${i}:${mode}/${clientMode}`);
      } finally {
        arrivals.delete(id);
      }
    }

    const plan = Array.from({ length: REQUESTS }, (_, i) => ({
      i,
      mode: pick(random, UPSTREAM_MODES),
      clientMode: pick(random, CLIENT_MODES),
    }));
    try {
      let next = 0;
      await Promise.all(Array.from({ length: PARALLEL }, async () => {
        while (next < plan.length) {
          const item = plan[next++];
          if (item !== undefined) await call(item.i, item.mode, item.clientMode);
        }
      }));
      // Clients are done, but the gateway may still be finishing exchanges whose
      // client went away (it learns of a disconnect after the client does).
      // Shutting it down waits for every one of them, and each exchange's
      // `completed` settles when its response was sent or abandoned: no polling.
      await gateway.close();
      await Promise.all(exchanges);
    } finally {
      stop.resolve();
      await gateway.close();
      forwarder.close();
      await upstream.close();
    }

    console.log(`statuses ${JSON.stringify(tally.statuses)}, client errors ${tally.clientErrors}`);
    assert.deepEqual(tally.stuck, [], `seed ${seed}: calls outlived the upstream timeout`);
    const stats = limiter.leases.stats();
    console.log(`lease stats ${JSON.stringify(stats)}`);
    assert.ok(exchanges.length >= REQUESTS * 0.8, `seed ${seed}: most calls reached the gateway`);
    assert.equal(limiter.slotsInUse("acme"), 0, `seed ${seed}: slots leaked`);
    assert.equal(limiter.leases.heldCount, 0, `seed ${seed}: leases still held`);
    assert.equal(stats.acquired, stats.released + stats.reclaimed, `seed ${seed}`);
    assert.equal(stats.reclaimed, 0, `seed ${seed}: the reclaimer had to step in`);
    assert.ok(stats.acquired >= REQUESTS * 0.8, `seed ${seed}: ${stats.acquired} acquired`);
    assert.equal(tally.statuses["429"] ?? 0, 0, "1000 slots are never all in use");
    for (const status of ["200", "500", "504"]) {
      assert.ok((tally.statuses[status] ?? 0) > 0, `seed ${seed}: no ${status} seen`);
    }
    assert.deepEqual(unexpected, [], `seed ${seed}: unexpected errors were logged`);
  });
}
