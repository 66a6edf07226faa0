/**
 * The admission hot path (SPEC §9): one clock read, a sliding-window rate
 * check, and a concurrency slot taken and given back. Compared, in the same
 * run, with a naive Map-based two-window counter and `rate-limiter-flexible`'s
 * `RateLimiterMemory`, and with `Date.now()` alone as the floor.
 *
 * Limits are set high enough that (almost) every request is admitted, so the
 * whole path is measured, not the cheaper denial. sluice addresses entries by
 * index (mapping keys to indexes is `key_index.ts`' job); the "+ key lookup"
 * rows add a `Map<string, number>` lookup to show that cost too.
 *
 * Run: `deno bench bench/limiter_bench.ts`
 */

import { RateLimiterMemory } from "rate-limiter-flexible";
import { SemaphoreTable } from "../src/limits/semaphore_table.ts";
import { WindowTable } from "../src/limits/window_table.ts";

const MANY_KEYS = 100_000;

/** Limits per group. The hot key's 10 ms window allows 10^8 requests/s: never reached. */
const HOT = { keys: 1, requests: 1_000_000, windowMs: 10 };
const SPREAD = { keys: MANY_KEYS, requests: 1_000, windowMs: 1_000 };

interface Limits {
  keys: number;
  requests: number;
  windowMs: number;
}

function keyNames(keys: number): string[] {
  return Array.from({ length: keys }, (_, i) => `acct_${i.toString(36).padStart(6, "0")}`);
}

/** sluice's decision for entry after entry, round-robin over `keys`. */
function sluiceAdmission(limits: Limits): () => void {
  const windows = new WindowTable(limits.keys);
  const semaphores = new SemaphoreTable(limits.keys);
  for (let i = 0; i < limits.keys; i++) {
    windows.init(i, limits.requests, limits.windowMs);
    semaphores.init(i, 1);
  }
  const epochMs = Date.now();
  let index = 0;
  return function admit(): void {
    const nowMs = Date.now() - epochMs;
    if (windows.tryAdmit(index, nowMs) >= 0 && semaphores.tryAcquire(index) >= 0) {
      semaphores.release(index);
    }
    index = index + 1 === limits.keys ? 0 : index + 1;
  };
}

/** The same, with the key → index lookup a real request would need first. */
function sluiceAdmissionByKey(limits: Limits): () => void {
  const windows = new WindowTable(limits.keys);
  const semaphores = new SemaphoreTable(limits.keys);
  const names = keyNames(limits.keys);
  const indexByKey = new Map<string, number>();
  names.forEach((name, i) => {
    indexByKey.set(name, i);
    windows.init(i, limits.requests, limits.windowMs);
    semaphores.init(i, 1);
  });
  const epochMs = Date.now();
  let next = 0;
  return function admitByKey(): void {
    const index = indexByKey.get(names[next] ?? "") ?? 0;
    const nowMs = Date.now() - epochMs;
    if (windows.tryAdmit(index, nowMs) >= 0 && semaphores.tryAcquire(index) >= 0) {
      semaphores.release(index);
    }
    next = next + 1 === limits.keys ? 0 : next + 1;
  };
}

interface TwoWindowCount {
  windowStartMs: number;
  previous: number;
  current: number;
}

/**
 * The usual naive approximation: a fixed window plus the previous one,
 * weighted by how much of it still overlaps the sliding window.
 */
function naiveTwoWindow(limits: Limits): () => void {
  const counts = new Map<string, TwoWindowCount>();
  const names = keyNames(limits.keys);
  let next = 0;
  return function admitTwoWindow(): void {
    const key = names[next] ?? "";
    next = next + 1 === limits.keys ? 0 : next + 1;
    const nowMs = Date.now();
    const windowStartMs = nowMs - (nowMs % limits.windowMs);
    let count = counts.get(key);
    if (count === undefined) {
      count = { windowStartMs, previous: 0, current: 0 };
      counts.set(key, count);
    } else if (count.windowStartMs !== windowStartMs) {
      const adjacent = windowStartMs - count.windowStartMs === limits.windowMs;
      count.previous = adjacent ? count.current : 0;
      count.current = 0;
      count.windowStartMs = windowStartMs;
    }
    const overlap = 1 - (nowMs - windowStartMs) / limits.windowMs;
    if (count.previous * overlap + count.current < limits.requests) count.current++;
  };
}

/** `RateLimiterMemory.consume()`, awaited; a rejection is a denial, not an error. */
function rateLimiterFlexible(limits: Limits): () => Promise<void> {
  const limiter = new RateLimiterMemory({
    points: limits.requests * 1_000,
    duration: Math.max(1, limits.windowMs / 1_000),
  });
  const names = keyNames(limits.keys);
  let next = 0;
  return async function consume(): Promise<void> {
    const key = names[next] ?? "";
    next = next + 1 === limits.keys ? 0 : next + 1;
    try {
      await limiter.consume(key);
    } catch {
      // denied: a decision like any other
    }
  };
}

function dateNowAlone(): void {
  Date.now();
}

for (const [group, limits] of [["hot key", HOT], ["100k keys round-robin", SPREAD]] as const) {
  Deno.bench({ group, name: "sluice: window + slot", baseline: true, fn: sluiceAdmission(limits) });
  Deno.bench({
    group,
    name: "sluice: window + slot + key lookup",
    fn: sluiceAdmissionByKey(limits),
  });
  Deno.bench({ group, name: "naive Map two-window counter", fn: naiveTwoWindow(limits) });
  Deno.bench({
    group,
    name: "rate-limiter-flexible RateLimiterMemory",
    fn: rateLimiterFlexible(limits),
  });
  Deno.bench({ group, name: "Date.now() alone", fn: dateNowAlone });
}

function semaphorePair(keys: number): () => void {
  const semaphores = new SemaphoreTable(keys);
  for (let i = 0; i < keys; i++) semaphores.init(i, 1);
  let index = 0;
  return function acquireRelease(): void {
    if (semaphores.tryAcquire(index) >= 0) semaphores.release(index);
    index = index + 1 === keys ? 0 : index + 1;
  };
}

Deno.bench({
  group: "semaphore",
  name: "tryAcquire + release, one key",
  baseline: true,
  fn: semaphorePair(1),
});
Deno.bench({
  group: "semaphore",
  name: "tryAcquire + release, 100k keys round-robin",
  fn: semaphorePair(MANY_KEYS),
});
