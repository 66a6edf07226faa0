/**
 * The dashboard feed: what one state holds, and how its event streams share
 * one interval. The interval is a fake the test fires by hand, so nothing
 * here waits for a real second.
 */

import assert from "node:assert/strict";
import {
  DashboardFeed,
  type DashboardFeedOptions,
  type DashboardState,
  type Interval,
} from "../../src/observe/dashboard_feed.ts";
import { RequestLog, type RequestRecord } from "../../src/observe/request_log.ts";
import { TrafficStats } from "../../src/observe/traffic_stats.ts";
import { FakeClock, makeConfig } from "../_helpers.ts";

/** An interval that runs only when the test fires it. */
class FakeInterval {
  runs: { tick: () => void; intervalMs: number; signal: AbortSignal }[] = [];
  interval: Interval = (tick, intervalMs, signal) => {
    this.runs.push({ tick, intervalMs, signal });
  };
  get active(): number {
    return this.runs.filter((r) => !r.signal.aborted).length;
  }
  fire(): void {
    for (const run of this.runs) if (!run.signal.aborted) run.tick();
  }
}

function record(requestId: string, overrides: Partial<RequestRecord> = {}): RequestRecord {
  return {
    timeMs: 1_800_000_000_000,
    requestId,
    accountId: "demo",
    keyId: "key_demo",
    plan: "lite",
    method: "POST",
    path: "/v1/monitor/chatgpt",
    status: 200,
    latencyMs: 12,
    decision: "admitted",
    ...overrides,
  };
}

function fixture(options: Partial<DashboardFeedOptions> = {}) {
  const clock = new FakeClock();
  const config = makeConfig(
    { lite: { concurrency: 10 }, business: { concurrency: 100 } },
    { demo: "lite", acme: "business" },
  );
  const slots = new Map([["demo", 3], ["acme", 0]]);
  const stats = new TrafficStats();
  const log = new RequestLog();
  const timer = new FakeInterval();
  const feed = new DashboardFeed({
    config,
    limiter: { slotsInUse: (id) => slots.get(id) ?? 0 },
    stats,
    clock,
    queueDepth: (id) => id === "acme" ? 7 : 0,
    log,
    interval: timer.interval,
    ...options,
  });
  return { clock, config, slots, stats, log, timer, feed };
}

/** Reads the stream up to its next `data:` event. */
async function nextEvent(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<DashboardState | undefined> {
  const decoder = new TextDecoder();
  while (true) {
    const { value, done } = await reader.read();
    if (done) return undefined;
    const text = decoder.decode(value);
    assert.ok(text.endsWith("\n\n"), "each chunk is whole SSE frames");
    const data = /^data: (.*)$/m.exec(text)?.[1];
    if (data !== undefined) return JSON.parse(data);
  }
}

Deno.test("DashboardFeed.state() reports plan, slots, last-minute traffic, queue depth and the last reload", () => {
  const { clock, config, stats, feed } = fixture();
  try {
    const nowMs = clock.nowMs();
    for (let i = 0; i < 5; i++) stats.record("demo", "admitted", nowMs - 1000);
    stats.record("demo", "rate", nowMs - 1000);
    stats.record("demo", "concurrency", nowMs - 20_000);
    stats.record("demo", "concurrency", nowMs - 120_000); // older than a minute

    const state = feed.state();
    assert.equal(state.time, new Date(nowMs).toISOString());
    assert.deepEqual(state.plans, ["lite", "business"]);
    assert.deepEqual(state.reload.ok, true);
    const demo = state.accounts.find((a) => a.id === "demo");
    const acme = state.accounts.find((a) => a.id === "acme");
    assert.ok(demo && acme);
    assert.equal(demo.plan, "lite");
    assert.equal(demo.slotsUsed, 3);
    assert.equal(demo.slotsLimit, 10);
    assert.equal(demo.requestsPerSecond, 6);
    assert.equal(demo.sparkline.length, 60);
    assert.equal(demo.sparkline.reduce((a, b) => a + b, 0), 7);
    assert.deepEqual(demo.rejectedLastMinute, { rate: 1, concurrency: 1 });
    assert.equal(demo.queueDepth, 0);
    assert.equal(acme.plan, "business");
    assert.equal(acme.slotsLimit, 100);
    assert.equal(acme.queueDepth, 7);
    assert.deepEqual(acme.sparkline, new Array(60).fill(0));

    const at = new Date(nowMs + 5000);
    config.reject([{ path: "plans.lite.concurrency", message: "must be positive" }], at, "watch");
    const rejected = feed.state().reload;
    assert.equal(rejected.ok, false);
    assert.equal(rejected.at, at.toISOString());
    assert.deepEqual(rejected.errors, [{
      path: "plans.lite.concurrency",
      message: "must be positive",
    }]);
  } finally {
    feed.close();
  }
});

Deno.test("DashboardFeed streams one event per tick of one shared interval, carrying the records written since the previous event", async () => {
  const { log, timer, feed, slots } = fixture();
  const a = feed.stream().getReader();
  const b = feed.stream().getReader();
  try {
    assert.equal((await nextEvent(a))?.accounts.length, 2);
    assert.ok(await nextEvent(b));
    assert.equal(timer.runs.length, 1, "one interval for every client");
    assert.equal(timer.runs[0]?.intervalMs, 1000);

    log.push(record("req-1"));
    log.push(record("req-2", { status: 429, decision: "rate" }));
    await log.drain();
    slots.set("demo", 9);
    timer.fire();
    const [eventA, eventB] = [await nextEvent(a), await nextEvent(b)];
    assert.deepEqual(eventA?.logTail.map((r) => r.requestId), ["req-1", "req-2"]);
    assert.deepEqual(eventB?.logTail, eventA?.logTail);
    assert.equal(eventA?.accounts.find((x) => x.id === "demo")?.slotsUsed, 9);

    timer.fire();
    assert.deepEqual((await nextEvent(a))?.logTail, [], "records are sent once");
    assert.deepEqual((await nextEvent(b))?.logTail, []);
  } finally {
    await a.cancel();
    await b.cancel();
    feed.close();
  }
});

Deno.test("DashboardFeed caps the tail per event and counts what it left out", async () => {
  const { log, timer, feed } = fixture({ tailMax: 3 });
  const reader = feed.stream().getReader();
  try {
    await nextEvent(reader);
    for (let i = 1; i <= 5; i++) log.push(record(`req-${i}`));
    await log.drain();
    timer.fire();
    const event = await nextEvent(reader);
    assert.deepEqual(event?.logTail.map((r) => r.requestId), ["req-3", "req-4", "req-5"]);
    assert.equal(event?.logTailOmitted, 2);
  } finally {
    await reader.cancel();
    feed.close();
  }
});

Deno.test("a new client first gets the recent records already sent to others, then only new ones", async () => {
  const { log, timer, feed } = fixture();
  const first = feed.stream().getReader();
  let second: ReadableStreamDefaultReader<Uint8Array> | undefined;
  try {
    await nextEvent(first);
    log.push(record("sent"));
    await log.drain();
    timer.fire();
    await nextEvent(first);
    log.push(record("unsent"));
    await log.drain();

    second = feed.stream().getReader();
    const initial = await nextEvent(second);
    assert.deepEqual(initial?.logTail.map((r) => r.requestId), ["sent"]);
    timer.fire();
    assert.deepEqual((await nextEvent(second))?.logTail.map((r) => r.requestId), ["unsent"]);
    assert.deepEqual((await nextEvent(first))?.logTail.map((r) => r.requestId), ["unsent"]);
  } finally {
    await first.cancel();
    await second?.cancel();
    feed.close();
  }
});

Deno.test("the shared interval stops when the last client cancels and starts again for the next", async () => {
  const { timer, feed } = fixture();
  assert.equal(feed.ticking, false, "no interval without clients");
  const a = feed.stream().getReader();
  const b = feed.stream().getReader();
  assert.equal(feed.clients, 2);
  assert.equal(timer.active, 1);

  await a.cancel();
  assert.equal(feed.clients, 1);
  assert.equal(timer.active, 1, "one client still watches");
  await b.cancel();
  assert.equal(feed.clients, 0);
  assert.equal(timer.active, 0, "stopped with the last client");
  assert.equal(feed.ticking, false);

  const c = feed.stream().getReader();
  assert.equal(timer.active, 1);
  assert.equal(timer.runs.length, 2);
  await c.cancel();
  assert.equal(timer.active, 0);
  feed.close();
});

Deno.test("a client that stops reading is closed once its queue is full, not buffered without bound", async () => {
  const { timer, feed } = fixture({ clientQueueMax: 4 });
  const slow = feed.stream().getReader();
  for (let i = 0; i < 10 && feed.clients > 0; i++) timer.fire();
  assert.equal(feed.clients, 0);
  assert.equal(timer.active, 0);
  let events = 0;
  while (await nextEvent(slow) !== undefined) events++;
  assert.ok(events >= 1 && events <= 4, `queued events are still delivered (${events})`);
  feed.close();
});

Deno.test("DashboardFeed.close() ends every stream, stops the interval and leaves the log", async () => {
  let subscribed = 0;
  const log = {
    subscribe: () => {
      subscribed++;
      return () => subscribed--;
    },
  };
  const { timer, feed } = fixture({ log });
  assert.equal(subscribed, 1);
  const reader = feed.stream().getReader();
  await nextEvent(reader);
  feed.close();
  assert.equal(timer.active, 0);
  assert.equal(subscribed, 0);
  assert.equal(await nextEvent(reader), undefined, "the stream ended");
  const late = feed.stream().getReader();
  assert.equal((await late.read()).done, true, "no stream after close");
});
