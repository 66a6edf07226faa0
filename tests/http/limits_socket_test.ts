/**
 * Rate and concurrency limits under real concurrency (SPEC §2): many clients
 * at once over real sockets, the real clock, and the built-in simulator held
 * in its "latency" by a gate the test opens, so that the requests really
 * overlap and nothing depends on timing.
 */

import assert from "node:assert/strict";
import { createApp } from "../../src/http/app.ts";
import type { Clock } from "../../src/limits/clock.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import type { PlansFile } from "../../src/plans/schema.ts";
import type { Forwarder } from "../../src/upstream/forwarder.ts";
import { Simulator } from "../../src/upstream/simulator.ts";
import { makeConfig, serveOnLoopback, testKey, type TestServer } from "../_helpers.ts";

const realClock: Clock = { nowMs: () => Date.now() };

interface Gateway {
  server: TestServer;
  limiter: Limiter;
  unexpected: unknown[];
  [Symbol.asyncDispose](): Promise<void>;
}

function startGateway(plans: PlansFile["plans"], forwarder: Forwarder): Gateway {
  const limiter = new Limiter({ epochMs: realClock.nowMs() });
  const unexpected: unknown[] = [];
  const app = createApp({
    config: makeConfig(plans, { acme: Object.keys(plans)[0] ?? "" }),
    limiter,
    clock: realClock,
    forwarder,
    onUnexpectedError: (error) => unexpected.push(error),
  });
  const server = serveOnLoopback(app.fetch);
  return { server, limiter, unexpected, [Symbol.asyncDispose]: () => server.close() };
}

/**
 * A simulator `sleep` that holds every call until `open()`; `arrived` counts
 * the calls that got that far (that is, hold a slot).
 */
function gatedSleep() {
  const gate = Promise.withResolvers<void>();
  const state = {
    arrived: 0,
    open: () => gate.resolve(),
    sleep: (_ms: number, signal: AbortSignal): Promise<void> => {
      state.arrived++;
      state.onArrival();
      return new Promise<void>((resolve, reject) => {
        const onAbort = () => reject(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        gate.promise.then(() => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        });
      });
    },
    onArrival: () => {},
  };
  return state;
}

const AUTH = { authorization: `Bearer ${testKey("acme")}` };

interface Outcome {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

async function outcomeOf(response: Response): Promise<Outcome> {
  return { status: response.status, headers: response.headers, body: await response.json() };
}

function countBy<T>(items: readonly T[], key: (item: T) => string): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const item of items) counts[key(item)] = (counts[key(item)] ?? 0) + 1;
  return counts;
}

Deno.test("80 concurrent requests against a limit of 50 give exactly 50 × 200 and 30 × 429", async () => {
  await using gateway = startGateway({
    tight: { concurrency: 1, rateLimit: { requests: 50, windowMs: 60_000 } },
  }, new Simulator());
  const outcomes = await Promise.all(
    Array.from(
      { length: 80 },
      async () => outcomeOf(await fetch(`${gateway.server.url}/v1/limits`, { headers: AUTH })),
    ),
  );
  assert.deepEqual(countBy(outcomes, (o) => String(o.status)), { "200": 50, "429": 30 });
  for (const o of outcomes) {
    assert.equal(o.headers.get("x-ratelimit-limit"), "50");
    if (o.status === 429) {
      assert.equal((o.body.error as { code: string }).code, "RATE_LIMIT_EXCEEDED");
      assert.equal(o.headers.get("x-ratelimit-remaining"), "0");
      assert.ok(Number(o.headers.get("retry-after")) >= 1);
    }
  }
  const remaining = outcomes.filter((o) => o.status === 200)
    .map((o) => Number(o.headers.get("x-ratelimit-remaining")))
    .sort((a, b) => a - b);
  assert.deepEqual(
    remaining,
    Array.from({ length: 50 }, (_, i) => i),
    "each admission counted once",
  );
  assert.deepEqual(gateway.unexpected, []);
});

Deno.test("5 slots, 8 simultaneous monitor calls: 5 × 200 and 3 × 429 CONCURRENCY_LIMIT_EXCEEDED", async () => {
  const gate = gatedSleep();
  await using gateway = startGateway(
    { five: { concurrency: 5, rateLimit: { requests: 500, windowMs: 60_000 } } },
    new Simulator({ sleep: gate.sleep }),
  );
  using _openOnExit = { [Symbol.dispose]: gate.open };
  let rejected = 0;
  // Open the gate once every call is either holding a slot in the simulator or has been refused.
  const check = () => {
    if (gate.arrived + rejected === 8) gate.open();
  };
  gate.onArrival = check;
  const outcomes = await Promise.all(Array.from({ length: 8 }, async (_, i) => {
    const response = await fetch(`${gateway.server.url}/v1/monitor/chatgpt`, {
      method: "POST",
      headers: { ...AUTH, "content-type": "application/json" },
      body: JSON.stringify({ prompt: `call ${i}` }),
    });
    if (response.status === 429) {
      rejected++;
      check();
    }
    return await outcomeOf(response);
  }));

  assert.deepEqual(countBy(outcomes, (o) => String(o.status)), { "200": 5, "429": 3 });
  assert.equal(gate.arrived, 5);
  for (const o of outcomes) {
    assert.equal(o.headers.get("x-concurrent-limit"), "5");
    const current = Number(o.headers.get("x-concurrent-current"));
    assert.equal(Number(o.headers.get("x-concurrent-remaining")), 5 - current);
    if (o.status === 429) {
      const error = o.body.error as { code: string; details: { limit: number } };
      assert.equal(error.code, "CONCURRENCY_LIMIT_EXCEEDED");
      assert.equal(error.details.limit, 5);
      assert.equal(current, 5);
      assert.match(o.headers.get("ratelimit-policy") ?? "", /qu="concurrent-requests"/);
    }
  }
  const currents = outcomes.filter((o) => o.status === 200)
    .map((o) => Number(o.headers.get("x-concurrent-current")))
    .sort((a, b) => a - b);
  assert.deepEqual(currents, [1, 2, 3, 4, 5]);
  // Each 200's body has been read to its end, and the slot goes back before the last chunk.
  assert.equal(gateway.limiter.slotsInUse("acme"), 0);
  assert.equal(gateway.limiter.leases.heldCount, 0);
  // The three refused for concurrency passed the rate limit first and count (SPEC §2.2).
  const limits = await fetch(`${gateway.server.url}/v1/limits`, { headers: AUTH });
  const body = await limits.json();
  assert.equal(body.rate.used, 9);
  assert.deepEqual(body.concurrency, { used: 0, max: 5 });
  assert.deepEqual(gateway.unexpected, []);
});

Deno.test("10 slots: the 11th simultaneous call is refused at once while the 10 are held", async () => {
  const gate = gatedSleep();
  await using gateway = startGateway(
    { lite: { concurrency: 10 } },
    new Simulator({ sleep: gate.sleep }),
  );
  using _openOnExit = { [Symbol.dispose]: gate.open };
  const done: string[] = [];
  const refusedWhileHeld = Promise.withResolvers<number>();
  const calls = Array.from({ length: 11 }, async () => {
    const response = await fetch(`${gateway.server.url}/v1/monitor/perplexity?prompt=x`, {
      method: "POST",
      headers: AUTH,
    });
    done.push(String(response.status));
    if (response.status === 429) {
      refusedWhileHeld.resolve(gateway.limiter.slotsInUse("acme"));
    }
    return await outcomeOf(response);
  });
  // The gate is still shut: the refusal cannot have waited for any of the 10.
  const slotsWhenRefused = await refusedWhileHeld.promise;
  assert.deepEqual(done, ["429"]);
  assert.equal(slotsWhenRefused, 10);
  gate.open();
  const outcomes = await Promise.all(calls);
  assert.deepEqual(countBy(outcomes, (o) => String(o.status)), { "200": 10, "429": 1 });
  assert.equal(gate.arrived, 10);
  assert.equal(gateway.limiter.slotsInUse("acme"), 0);
  assert.deepEqual(gateway.unexpected, []);
});
