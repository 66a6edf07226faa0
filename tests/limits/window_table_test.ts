/**
 * Property tests for {@linkcode WindowTable} against an exact sliding log: a
 * request at `t` is admissible iff fewer than `requests` admissions lie in
 * `(t - windowMs, t]`. Traces come from a seeded PRNG; every failure message
 * starts with the seed (and trace kind) that reproduces it.
 */

import assert from "node:assert/strict";
import { BUCKETS_PER_WINDOW, MAX_REQUESTS, WindowTable } from "../../src/limits/window_table.ts";

// ---------------------------------------------------------------------------
// Seeded randomness

type Rng = () => number;

/** mulberry32: tiny, fast, and good enough to shuffle traces reproducibly. */
function mulberry32(seed: number): Rng {
  let state = seed >>> 0;
  return function next(): number {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in `lo..hi`, both inclusive. */
function intBetween(rng: Rng, lo: number, hi: number): number {
  return lo + Math.floor(rng() * (hi - lo + 1));
}

/** An integer in `lo..hi`, log-uniform, so small and large values both show up. */
function logUniformInt(rng: Rng, lo: number, hi: number): number {
  const value = Math.floor(Math.exp(Math.log(lo) + rng() * (Math.log(hi + 1) - Math.log(lo))));
  return Math.min(hi, Math.max(lo, value));
}

function pick<T>(rng: Rng, values: readonly T[]): T {
  const value = values[Math.floor(rng() * values.length)];
  if (value === undefined) throw new RangeError("pick() from an empty list");
  return value;
}

function item(values: readonly number[], index: number): number {
  const value = values[index];
  if (value === undefined) throw new RangeError(`no item ${index} of ${values.length}`);
  return value;
}

// ---------------------------------------------------------------------------
// The exact reference

/** How many of the sorted `timesMs` are strictly greater than `afterMs` (any real number). */
function countAfter(timesMs: readonly number[], afterMs: number): number {
  let lo = 0;
  let hi = timesMs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (item(timesMs, mid) > afterMs) hi = mid;
    else lo = mid + 1;
  }
  return timesMs.length - lo;
}

/** The exact sliding log: what a perfect limiter would admit. */
class SlidingLog {
  readonly limit: number;
  readonly windowMs: number;
  readonly admittedMs: number[] = [];

  constructor(limit: number, windowMs: number) {
    this.limit = limit;
    this.windowMs = windowMs;
  }

  /** Admissions in `(nowMs - windowMs, nowMs]`. */
  count(nowMs: number): number {
    return countAfter(this.admittedMs, nowMs - this.windowMs);
  }

  tryAdmit(nowMs: number): boolean {
    if (this.count(nowMs) >= this.limit) return false;
    this.admittedMs.push(nowMs);
    return true;
  }
}

/**
 * The largest number of `admittedMs` (sorted) inside any half-open interval of
 * length `windowMs`: the quantity "never over-admit" bounds.
 */
function maxInAnyWindow(admittedMs: readonly number[], windowMs: number): number {
  let most = 0;
  let head = 0;
  for (let i = 0; i < admittedMs.length; i++) {
    while (item(admittedMs, head) <= item(admittedMs, i) - windowMs) head++;
    most = Math.max(most, i - head + 1);
  }
  return most;
}

/** What a fixed window that resets every `windowMs` would admit. */
function fixedWindowAdmits(traceMs: readonly number[], limit: number, windowMs: number): number[] {
  const admitted: number[] = [];
  let windowStart = -1;
  let count = 0;
  for (const t of traceMs) {
    const start = Math.floor(t / windowMs) * windowMs;
    if (start !== windowStart) {
      windowStart = start;
      count = 0;
    }
    if (count < limit) {
      count++;
      admitted.push(t);
    }
  }
  return admitted;
}

/** A copy of a table's state, to probe "what if" without disturbing the original. */
function snapshot(table: WindowTable): WindowTable {
  const copy = new SharedArrayBuffer(table.buffer.byteLength);
  new Int32Array(copy).set(new Int32Array(table.buffer));
  return new WindowTable(table.capacity, copy);
}

/** How many of `count` admissions at `nowMs` a table admits. */
function admitBurst(table: WindowTable, index: number, nowMs: number, count: number): number {
  let admitted = 0;
  for (let i = 0; i < count; i++) if (table.tryAdmit(index, nowMs) >= 0) admitted++;
  return admitted;
}

// ---------------------------------------------------------------------------
// Traces

type TraceKind = "poisson" | "bursty" | "sparse" | "boundary";
const TRACE_KINDS: readonly TraceKind[] = ["poisson", "bursty", "sparse", "boundary"];

interface Trace {
  seed: number;
  kind: TraceKind;
  limit: number;
  windowMs: number;
  timesMs: number[];
}

function describe(trace: Trace): string {
  return `seed ${trace.seed} (${trace.kind}, limit ${trace.limit}, windowMs ${trace.windowMs})`;
}

/** A nondecreasing list of request times, shaped by `kind`. */
function makeTrace(seed: number, kind: TraceKind, options: { requests?: number } = {}): Trace {
  const { requests = 2_000 } = options;
  const rng = mulberry32(seed);
  const limit = logUniformInt(rng, 1, 1_000);
  const windowMs = logUniformInt(rng, 1, 60_000);
  const timesMs: number[] = [];
  let t = intBetween(rng, 0, 10 * windowMs);
  let bucket = Math.floor((t * BUCKETS_PER_WINDOW) / windowMs);
  while (timesMs.length < requests) {
    if (kind === "poisson") {
      // Demand between half and three times the limit.
      const meanGapMs = windowMs / (limit * (0.5 + 2.5 * rng()));
      t += -Math.log(1 - rng()) * meanGapMs;
      timesMs.push(Math.floor(t));
    } else if (kind === "bursty") {
      const size = intBetween(rng, 1, 2 * limit);
      const spreadMs = intBetween(rng, 0, Math.floor(windowMs / 8));
      const burst: number[] = [];
      for (let i = 0; i < size; i++) burst.push(Math.floor(t + rng() * spreadMs));
      burst.sort((a, b) => a - b);
      timesMs.push(...burst);
      // Now and then a silence long enough for the 12-bit bucket tags to wrap.
      const roll = rng();
      const idleWindows = roll < 0.05 ? 40 + 80 * rng() : roll < 0.15 ? 20 * rng() : 2.5 * rng();
      t += spreadMs + idleWindows * windowMs;
    } else if (kind === "sparse") {
      t += intBetween(rng, 0, 3 * windowMs);
      timesMs.push(t);
    } else {
      // Hug the table's own bucket edges, where an off-by-one would show.
      bucket += intBetween(rng, 0, 70);
      const edgeMs = Math.ceil((bucket * windowMs) / BUCKETS_PER_WINDOW) + intBetween(rng, -1, 1);
      const at = Math.max(timesMs.at(-1) ?? 0, edgeMs);
      const size = intBetween(rng, 1, Math.ceil(limit / 4));
      for (let i = 0; i < size; i++) timesMs.push(at);
    }
  }
  timesMs.length = requests;
  return { seed, kind, limit, windowMs, timesMs };
}

const SEEDS_PER_KIND = 60;

function randomTraces(): Trace[] {
  const traces: Trace[] = [];
  for (const kind of TRACE_KINDS) {
    for (let i = 0; i < SEEDS_PER_KIND; i++) {
      traces.push(makeTrace(0x5eed_0000 + 1_000 * TRACE_KINDS.indexOf(kind) + i, kind));
    }
  }
  return traces;
}

interface Run {
  /** Times the table admitted, in order. */
  admittedMs: number[];
  /** For each request of the trace: whether the table admitted it. */
  decisions: boolean[];
}

/**
 * Feeds `trace` to entry 0 of a fresh table and checks each decision against
 * an exact log of the table's own admissions: an admission must be one the log
 * allows, and (unless `justifyDenials` is false) a denial must be justified by
 * a window one bucket longer.
 */
function runChecked(trace: Trace, options: { justifyDenials?: boolean } = {}): Run {
  const { justifyDenials = true } = options;
  const { limit, windowMs } = trace;
  const table = new WindowTable(1);
  table.init(0, limit, windowMs);
  const admittedMs: number[] = [];
  const decisions: boolean[] = [];
  const bucketMs = windowMs / BUCKETS_PER_WINDOW;
  for (let i = 0; i < trace.timesMs.length; i++) {
    const t = item(trace.timesMs, i);
    const inWindow = countAfter(admittedMs, t - windowMs);
    const remaining = table.tryAdmit(0, t);
    if (remaining >= 0) {
      assert.ok(
        inWindow < limit,
        `${
          describe(trace)
        }: request #${i} at ${t} ms admitted with ${inWindow} already in the window`,
      );
      admittedMs.push(t);
    } else if (justifyDenials) {
      const inLongerWindow = countAfter(admittedMs, t - windowMs - bucketMs);
      assert.ok(
        inLongerWindow >= limit,
        `${describe(trace)}: request #${i} at ${t} ms denied with only ${inLongerWindow} ` +
          `admissions in the last windowMs + 1 bucket (${inWindow} in the window)`,
      );
    }
    decisions.push(remaining >= 0);
  }
  return { admittedMs, decisions };
}

function exactAdmissions(trace: Trace): number {
  const log = new SlidingLog(trace.limit, trace.windowMs);
  let admitted = 0;
  for (const t of trace.timesMs) if (log.tryAdmit(t)) admitted++;
  return admitted;
}

// ---------------------------------------------------------------------------
// Never over-admit

Deno.test("WindowTable.tryAdmit() never admits more than the limit in any rolling window (random traces)", () => {
  for (const trace of randomTraces()) {
    const { admittedMs } = runChecked(trace, { justifyDenials: false });
    const most = maxInAnyWindow(admittedMs, trace.windowMs);
    assert.ok(
      most <= trace.limit,
      `${describe(trace)}: ${most} admissions inside one rolling window`,
    );
  }
});

Deno.test("WindowTable.tryAdmit() holds the limit across fixed-window edges where a fixed window admits double", () => {
  const seed = 0xed6e;
  const rng = mulberry32(seed);
  for (const windowMs of [1_000, 1_001, 999, 61, 60_000, 7]) {
    for (const limit of [1, 2, 10, 500, 1_000]) {
      // Full bursts just before and just after several multiples of windowMs,
      // each pair far enough from the next for the window to drain.
      const timesMs: number[] = [];
      for (let k = 1; k <= 6; k++) {
        const edgeMs = k * 3 * windowMs + intBetween(rng, 0, 1) * windowMs;
        for (let i = 0; i < limit; i++) timesMs.push(edgeMs - 1);
        for (let i = 0; i < limit; i++) timesMs.push(edgeMs);
        for (let i = 0; i < limit; i++) timesMs.push(edgeMs + 1);
      }
      const trace: Trace = { seed, kind: "boundary", limit, windowMs, timesMs };
      const fixed = fixedWindowAdmits(timesMs, limit, windowMs);
      assert.ok(
        maxInAnyWindow(fixed, windowMs) >= 2 * limit,
        `${describe(trace)}: the trace does not fool a fixed window, so it proves nothing`,
      );
      const { admittedMs } = runChecked(trace);
      assert.equal(
        maxInAnyWindow(admittedMs, windowMs),
        limit,
        `${describe(trace)}: the sliding window must admit exactly one full limit per edge`,
      );
    }
  }
});

// ---------------------------------------------------------------------------
// Do not starve

Deno.test("WindowTable.tryAdmit() denies only when a window one bucket longer is full, and admits ≥ 95% of an exact log", () => {
  const admittedByKind = new Map<TraceKind, { table: number; exact: number }>();
  for (const trace of randomTraces()) {
    const { admittedMs } = runChecked(trace);
    const exact = exactAdmissions(trace);
    const totals = admittedByKind.get(trace.kind) ?? { table: 0, exact: 0 };
    totals.table += admittedMs.length;
    totals.exact += exact;
    admittedByKind.set(trace.kind, totals);
    if (exact >= 100) {
      assert.ok(
        admittedMs.length >= 0.95 * exact,
        `${describe(trace)}: admitted ${admittedMs.length}, an exact log admits ${exact}`,
      );
    }
  }
  for (const [kind, totals] of admittedByKind) {
    assert.ok(
      totals.table >= 0.97 * totals.exact,
      `${kind} traces: admitted ${totals.table} in all, an exact log admits ${totals.exact}`,
    );
  }
});

/**
 * Times of a client sending `limit * 97 / 100` requests per window, evenly:
 * the k-th at `startMs + floor((phase + k * 100 * windowMs) / (97 * limit))`,
 * in integers so the pace is exact.
 */
function pacedTrace(
  limit: number,
  windowMs: number,
  options: { startMs: number; phase: number; windows: number },
): number[] {
  const { startMs, phase, windows } = options;
  const count = Math.ceil((windows * 97 * limit) / 100);
  const timesMs: number[] = [];
  for (let k = 0; k < count; k++) {
    timesMs.push(startMs + Math.floor((phase + k * 100 * windowMs) / (97 * limit)));
  }
  return timesMs;
}

Deno.test("WindowTable.tryAdmit() never rejects a client pacing evenly at 97% of the limit", () => {
  const seed = 0x97;
  const rng = mulberry32(seed);
  for (const windowMs of [1, 61, 999, 1_000, 1_001, 60_000]) {
    for (const limit of [1, 2, 7, 10, 100, 500, 1_000]) {
      const phases = [0, intBetween(rng, 0, 97 * limit - 1), 97 * limit - 1];
      for (const phase of phases) {
        const startMs = intBetween(rng, 0, 10 * windowMs);
        const windows = Math.max(8, Math.min(60, Math.floor(20_000 / limit)));
        const timesMs = pacedTrace(limit, windowMs, { startMs, phase, windows });
        const what = `seed ${seed} (limit ${limit}, windowMs ${windowMs}, start ${startMs} ms, ` +
          `phase ${phase})`;
        const log = new SlidingLog(limit, windowMs);
        assert.ok(timesMs.every((t) => log.tryAdmit(t)), `${what}: even an exact log rejects`);
        const table = new WindowTable(1);
        table.init(0, limit, windowMs);
        for (let i = 0; i < timesMs.length; i++) {
          const t = item(timesMs, i);
          assert.ok(table.tryAdmit(0, t) >= 0, `${what}: request #${i} at ${t} ms rejected`);
        }
      }
    }
  }
});

Deno.test("WindowTable.tryAdmit() admits a full burst once the last admission is exactly windowMs old", () => {
  const seed = 0xb0257;
  const rng = mulberry32(seed);
  for (const windowMs of [1, 2, 61, 63, 999, 1_000, 1_001, 60_000]) {
    for (const limit of [1, 2, 7, 10, 500, 1_000]) {
      const what = `seed ${seed} (limit ${limit}, windowMs ${windowMs})`;
      const table = new WindowTable(1);
      table.init(0, limit, windowMs);
      // A full burst at one instant, then again exactly one window later.
      const burstMs = intBetween(rng, 0, 10 * windowMs);
      assert.equal(admitBurst(table, 0, burstMs, limit), limit, `${what}: first burst`);
      assert.equal(admitBurst(table, 0, burstMs + windowMs - 1, 1), 0, `${what}: one early`);
      assert.equal(
        admitBurst(table, 0, burstMs + windowMs, limit + 1),
        limit,
        `${what}: burst exactly one window after a burst`,
      );
      // A window spread evenly, then a burst exactly windowMs after its last request.
      const startMs = burstMs + 3 * windowMs + intBetween(rng, 0, windowMs);
      let lastMs = startMs;
      for (let i = 0; i < limit; i++) {
        lastMs = startMs + Math.floor((i * (windowMs - 1)) / limit);
        assert.ok(table.tryAdmit(0, lastMs) >= 0, `${what}: spread request #${i} at ${lastMs} ms`);
      }
      assert.equal(
        admitBurst(table, 0, lastMs + windowMs, limit),
        limit,
        `${what}: burst at ${
          lastMs + windowMs
        } ms, one window after a spread window ending at ${lastMs} ms`,
      );
    }
  }
});

// ---------------------------------------------------------------------------
// remaining, setLimit, msUntilFree

Deno.test("WindowTable.admit() reports remaining = max(0, limit - used), never negative", () => {
  for (const trace of randomTraces().filter((_, i) => i % 4 === 0)) {
    const table = new WindowTable(1);
    table.init(0, trace.limit, trace.windowMs);
    for (let i = 0; i < trace.timesMs.length; i++) {
      const t = item(trace.timesMs, i);
      const usedBefore = table.used(0, t);
      const decision = table.admit(0, t);
      const usedAfter = table.used(0, t);
      const what = `${describe(trace)}: request #${i} at ${t} ms`;
      assert.equal(decision.limit, trace.limit, what);
      assert.ok(decision.remaining >= 0, `${what}: remaining ${decision.remaining}`);
      assert.equal(decision.allowed, usedBefore < trace.limit, `${what}: used ${usedBefore}`);
      assert.equal(usedAfter, usedBefore + (decision.allowed ? 1 : 0), `${what}: used count`);
      assert.equal(decision.remaining, Math.max(0, trace.limit - usedAfter), `${what}: remaining`);
    }
  }
});

Deno.test("WindowTable.setLimit() raises the limit in place without resetting counts", () => {
  const table = new WindowTable(1);
  table.init(0, 10, 1_000);
  for (let i = 0; i < 10; i++) assert.ok(table.tryAdmit(0, 100 * i) >= 0, `request #${i}`);
  assert.equal(table.tryAdmit(0, 950), -1);
  table.setLimit(0, 20);
  assert.equal(table.limit(0), 20);
  assert.equal(table.windowMs(0), 1_000);
  assert.equal(table.used(0, 950), 10, "raising the limit keeps the counts");
  assert.equal(admitBurst(table, 0, 950, 11), 10, "exactly the ten new slots are free at once");
  assert.equal(table.used(0, 950), 20);
});

Deno.test("WindowTable.setLimit() lowered below current use denies until use falls under the new limit", () => {
  const windowMs = 1_000;
  const table = new WindowTable(1);
  table.init(0, 20, windowMs);
  const log = new SlidingLog(5, windowMs);
  for (let i = 0; i < 20; i++) {
    assert.ok(table.tryAdmit(0, 50 * i) >= 0, `request #${i}`);
    log.admittedMs.push(50 * i);
  }
  table.setLimit(0, 5);
  assert.equal(table.used(0, 960), 20, "lowering the limit keeps the counts");
  assert.equal(table.admit(0, 960).remaining, 0);
  // The exact log first admits once only four of the twenty remain: at 1750 ms.
  const exactFreeMs = 1_750;
  assert.equal(log.count(exactFreeMs - 1), 5);
  assert.equal(log.count(exactFreeMs), 4);
  const waitMs = table.msUntilFree(0, 960);
  assert.ok(960 + waitMs >= exactFreeMs, `msUntilFree ${waitMs} ms would over-admit`);
  for (let t = 960; t < exactFreeMs; t++) assert.equal(table.tryAdmit(0, t), -1, `at ${t} ms`);
  let admittedAtMs = -1;
  for (let t = exactFreeMs; admittedAtMs < 0; t++) if (table.tryAdmit(0, t) >= 0) admittedAtMs = t;
  assert.ok(
    admittedAtMs <= exactFreeMs + Math.ceil(windowMs / BUCKETS_PER_WINDOW),
    `first admission at ${admittedAtMs} ms, more than one bucket after ${exactFreeMs} ms`,
  );
  assert.equal(admittedAtMs, 960 + waitMs, "msUntilFree named the first admitted ms");
});

Deno.test("WindowTable.msUntilFree() names the first ms at which `needed` more requests are admitted", () => {
  let probes = 0;
  for (const trace of randomTraces().filter((_, i) => i % 3 === 0)) {
    const rng = mulberry32(trace.seed ^ 0x3f3f);
    const table = new WindowTable(1);
    table.init(0, trace.limit, trace.windowMs);
    for (let i = 0; i < trace.timesMs.length; i++) {
      const t = item(trace.timesMs, i);
      const denied = table.tryAdmit(0, t) < 0;
      if (!denied && rng() > 0.05) continue;
      const needed = rng() < 0.5 ? 1 : intBetween(rng, 1, trace.limit);
      const waitMs = table.msUntilFree(0, t, needed);
      const what = `${describe(trace)}: after request #${i} at ${t} ms, needed ${needed}, ` +
        `msUntilFree ${waitMs}`;
      assert.ok(Number.isInteger(waitMs) && waitMs >= 0, what);
      assert.equal(
        admitBurst(snapshot(table), 0, t + waitMs, needed),
        needed,
        `${what}: too early`,
      );
      if (waitMs > 0) {
        assert.ok(
          admitBurst(snapshot(table), 0, t + waitMs - 1, needed) < needed,
          `${what}: 1 ms earlier would already do`,
        );
      }
      probes++;
    }
  }
  assert.ok(probes > 1_000, `only ${probes} probes: the traces do not exercise msUntilFree`);
});

Deno.test("WindowTable.msUntilFree() is 0 exactly when the window has room now", () => {
  // 0, 100 and 200 ms fall in three different buckets of a 1000 ms window.
  const table = new WindowTable(1);
  table.init(0, 3, 1_000);
  assert.equal(table.msUntilFree(0, 0), 0);
  table.tryAdmit(0, 0);
  table.tryAdmit(0, 100);
  assert.equal(table.msUntilFree(0, 100), 0);
  assert.equal(table.msUntilFree(0, 100, 2), 900, "two more once the request at 0 ms leaves");
  table.tryAdmit(0, 200);
  assert.equal(table.msUntilFree(0, 200), 800);
  assert.equal(table.msUntilFree(0, 200, 3), 1_000);
});

// Minimal trace: limit 2 per 63 ms (one bucket per ms). Requests at 0 and 62 ms
// fill the window; at 63 ms the one at 0 ms has left, so a third is admitted.
// The window is full again, and its oldest request (62 ms) leaves at 125 ms.
Deno.test("WindowTable.msUntilFree() ignores a bucket that has already left the window", () => {
  const table = new WindowTable(1);
  table.init(0, 2, 63);
  assert.ok(table.tryAdmit(0, 0) >= 0);
  assert.ok(table.tryAdmit(0, 62) >= 0);
  assert.ok(table.tryAdmit(0, 63) >= 0);
  assert.equal(table.msUntilFree(0, 63), 62);
  assert.equal(table.tryAdmit(0, 124), -1);
  assert.ok(table.tryAdmit(0, 125) >= 0);
});

// ---------------------------------------------------------------------------
// Isolation, range, time far away

Deno.test("WindowTable entries at different indexes never interfere", () => {
  const seed = 0x1d5;
  const rng = mulberry32(seed);
  const traces = [0, 1, 2, 3].map((i) => makeTrace(seed + i, pick(rng, TRACE_KINDS)));
  const shared = new WindowTable(traces.length);
  traces.forEach((trace, index) => shared.init(index, trace.limit, trace.windowMs));
  const expected = traces.map((trace) => runChecked(trace, { justifyDenials: false }).decisions);
  // Interleave the four traces in a random order; each keeps its own order.
  const next = traces.map(() => 0);
  for (let step = 0; step < traces.length * 2_000; step++) {
    let index = intBetween(rng, 0, traces.length - 1);
    while (item(next, index) >= 2_000) index = (index + 1) % traces.length;
    const trace = traces[index];
    const decisions = expected[index];
    if (trace === undefined || decisions === undefined) throw new RangeError("no trace");
    const i = item(next, index);
    next[index] = i + 1;
    const admitted = shared.tryAdmit(index, item(trace.timesMs, i)) >= 0;
    assert.equal(admitted, decisions[i], `${describe(trace)} at index ${index}: request #${i}`);
  }
});

Deno.test("WindowTable entries next to a full one still admit a full burst", () => {
  const table = new WindowTable(3);
  for (let index = 0; index < 3; index++) table.init(index, 100, 1_000);
  assert.equal(admitBurst(table, 1, 500, 200), 100);
  assert.equal(admitBurst(table, 0, 500, 100), 100);
  assert.equal(admitBurst(table, 2, 500, 100), 100);
  assert.equal(table.used(1, 500), 100);
  table.init(0, 1, 10);
  assert.equal(table.used(1, 500), 100, "init() of a neighbour leaves this entry alone");
  assert.equal(table.used(2, 500), 100);
});

Deno.test("WindowTable rejects limits it cannot represent", () => {
  const table = new WindowTable(1);
  assert.throws(() => table.init(0, 0, 1_000), RangeError);
  assert.throws(() => table.init(0, MAX_REQUESTS + 1, 1_000), RangeError);
  assert.throws(() => table.init(0, 1.5, 1_000), RangeError);
  assert.throws(() => table.init(0, 10, 0), RangeError);
  assert.throws(() => table.init(0, 10, 3_600_001), RangeError);
  table.init(0, MAX_REQUESTS, 3_600_000);
  assert.equal(admitBurst(table, 0, 0, 10), 10);
  assert.throws(() => table.setLimit(0, 0), RangeError);
  assert.equal(table.limit(0), MAX_REQUESTS);
});

Deno.test("WindowTable admits a full burst after any idle gap, including gaps past the 4095-bucket tag cycle", () => {
  // Gaps in buckets around every place a 12-bit tag could alias: half the
  // cycle, the whole cycle, and the ring × tag period (64 × 4095).
  const gapsInBuckets = [64, 2_047, 2_048, 3_000, 4_094, 4_095, 4_096, 4_158, 8_190, 262_080];
  for (const windowMs of [1, 61, 1_000, 60_000]) {
    for (const limit of [1, 5, 500]) {
      for (const gapBuckets of gapsInBuckets) {
        const gapMs = Math.ceil((gapBuckets * windowMs) / BUCKETS_PER_WINDOW);
        const what =
          `limit ${limit}, windowMs ${windowMs}, idle ${gapBuckets} buckets (${gapMs} ms)`;
        const table = new WindowTable(1);
        table.init(0, limit, windowMs);
        const startMs = 12_345;
        assert.equal(admitBurst(table, 0, startMs, limit), limit, `${what}: first burst`);
        assert.equal(
          admitBurst(table, 0, startMs + gapMs, limit + 1),
          limit,
          `${what}: burst after the gap`,
        );
        assert.equal(table.used(0, startMs + gapMs), limit, `${what}: used after the gap`);
      }
    }
  }
});

// Minimal trace: limit 5 per 1000 ms; five requests at 0 ms, then silence for
// 40 s (2520 buckets, more than half the 4095-tag cycle). The window is empty.
Deno.test("WindowTable.tryAdmit() admits after 40 s of silence on a 1 s window", () => {
  const table = new WindowTable(1);
  table.init(0, 5, 1_000);
  assert.equal(admitBurst(table, 0, 0, 5), 5);
  assert.equal(table.used(0, 40_000), 0);
  assert.equal(table.tryAdmit(0, 40_000), 4);
});

// Minimal trace: limit 2 per 63 ms (one bucket per ms). Two requests at 0 ms,
// one denied at 1 ms (so the current bucket is 1, empty, with the cached sum 2),
// then silence for exactly one tag cycle: 4095 buckets later the current word
// and the cached sum look like this very bucket's.
Deno.test("WindowTable.tryAdmit() admits after a silence of exactly one tag cycle", () => {
  const table = new WindowTable(1);
  table.init(0, 2, 63);
  assert.equal(admitBurst(table, 0, 0, 2), 2);
  assert.equal(table.tryAdmit(0, 1), -1);
  assert.equal(table.used(0, 1 + 4_095), 0);
  assert.equal(admitBurst(table, 0, 1 + 4_095, 3), 2);
});

// Minimal trace: limit 5 per 63 ms (one bucket per ms). A burst at 0 ms, and a
// request denied at 1 ms that archives it in ring slot 0 with tag 0. Then a
// heartbeat every 64 ms, which never writes slot 0. 262,080 buckets (the ring ×
// tag period) later, bucket 262,080 maps to slot 0 and tag 0 again, and must
// not count that old burst.
Deno.test("WindowTable.tryAdmit() never counts a burst from a whole ring × tag period ago", () => {
  const table = new WindowTable(1);
  table.init(0, 5, 63);
  assert.equal(admitBurst(table, 0, 0, 5), 5);
  assert.equal(table.tryAdmit(0, 1), -1);
  for (let k = 1; k <= 4_095; k++) {
    const t = 64 * k + 1;
    assert.equal(table.used(0, t), 0, `heartbeat at ${t} ms`);
    assert.equal(table.tryAdmit(0, t), 4, `heartbeat at ${t} ms`);
  }
});

// The same alias without any silence: a request every 32 ms (half a window)
// only ever lands in slots 1 and 33.
Deno.test("WindowTable.tryAdmit() never counts an aliased burst under steady traffic", () => {
  const table = new WindowTable(1);
  table.init(0, 5, 63);
  assert.equal(admitBurst(table, 0, 0, 5), 5);
  assert.equal(table.tryAdmit(0, 1), -1);
  for (let k = 2; k <= 2 * 4_095 + 2; k++) {
    const t = 32 * k + 1;
    assert.ok(table.used(0, t) <= 2, `used at ${t} ms`);
    assert.ok(table.tryAdmit(0, t) >= 0, `request at ${t} ms`);
  }
});

Deno.test("WindowTable keeps exact limits on random traces hours past its epoch", () => {
  for (let i = 0; i < 40; i++) {
    const seed = 0xfa7_0000 + i;
    const rng = mulberry32(seed);
    const base = makeTrace(seed, pick(rng, TRACE_KINDS), { requests: 1_500 });
    // Shift the whole trace by hours, then insert long silences between bursts.
    const offsetMs = intBetween(rng, 3, 30) * 3_600_000 + intBetween(rng, 0, 3_600_000);
    let extraMs = 0;
    const timesMs = base.timesMs.map((t) => {
      if (rng() < 0.01) extraMs += intBetween(rng, 1, 5_000) * base.windowMs;
      return t + offsetMs + extraMs;
    });
    const trace: Trace = { ...base, timesMs };
    const { admittedMs } = runChecked(trace);
    const most = maxInAnyWindow(admittedMs, trace.windowMs);
    assert.ok(most <= trace.limit, `${describe(trace)}, hours later: ${most} in one window`);
  }
});

// ---------------------------------------------------------------------------
// Clocks that disagree (isolates read their clocks independently)

// Minimal trace: limit 1 per 1000 ms. Isolate A admits at 10 ms; isolate B,
// whose clock is ahead, moves the entry to the bucket of 1016 ms; then A's
// request stamped 1009 ms arrives. The one at 10 ms is still inside (9, 1009],
// so it must be denied; at 1010 ms it has left.
Deno.test("WindowTable.tryAdmit() judges a call stamped before the current bucket by its own stamp", () => {
  const table = new WindowTable(1);
  table.init(0, 1, 1_000);
  assert.equal(table.tryAdmit(0, 10), 0);
  assert.equal(table.used(0, 1_016), 0, "B's clock: the request at 10 ms has left its window");
  assert.equal(
    table.tryAdmit(0, 1_009),
    -1,
    "A's clock: the request at 10 ms is still in the window",
  );
  assert.equal(table.used(0, 1_009), 1);
  assert.equal(table.tryAdmit(0, 1_010), 0, "at 1010 ms the request at 10 ms has left");
  assert.equal(table.tryAdmit(0, 1_016), -1, "the one admitted at 1010 ms counts for B too");
});

// Minimal trace: limit 2 per 63 ms (one bucket per ms). Two requests at 10 ms;
// one at 74 ms (both have left its window); the entry moves on to 75 ms, which
// archives bucket 74 over bucket 10's ring slot. A request stamped 72 ms (three
// buckets behind) has both requests at 10 ms in its window, but their count is
// gone from the ring: it must be denied, not admitted on what is left.
Deno.test("WindowTable.tryAdmit() denies a call stamped buckets behind once a bucket it needs is overwritten", () => {
  const table = new WindowTable(1);
  table.init(0, 2, 63);
  assert.equal(admitBurst(table, 0, 10, 2), 2);
  assert.equal(table.tryAdmit(0, 74), 1);
  assert.equal(table.used(0, 75), 1);
  assert.equal(table.tryAdmit(0, 72), -1);
  assert.equal(table.used(0, 75), 1, "the denied call was not counted");
});

Deno.test("WindowTable.tryAdmit() never over-admits by the callers' own stamps when two clocks disagree", () => {
  let outOfOrder = 0;
  for (let i = 0; i < 120; i++) {
    const seed = 0xc10c_0000 + i;
    const rng = mulberry32(seed);
    const trace = makeTrace(seed, pick(rng, TRACE_KINDS), { requests: 1_500 });
    // Half the requests come from an isolate whose clock reads up to four buckets behind.
    const lagMaxMs = Math.ceil((intBetween(rng, 1, 4) * trace.windowMs) / BUCKETS_PER_WINDOW);
    const stampsMs = trace.timesMs.map((t) =>
      rng() < 0.5 ? t : Math.max(0, t - intBetween(rng, 0, lagMaxMs))
    );
    const table = new WindowTable(1);
    table.init(0, trace.limit, trace.windowMs);
    const admittedMs: number[] = [];
    let latestMs = 0;
    for (const t of stampsMs) {
      if (t < latestMs) outOfOrder++;
      latestMs = Math.max(latestMs, t);
      if (table.tryAdmit(0, t) >= 0) admittedMs.push(t);
    }
    admittedMs.sort((a, b) => a - b);
    const most = maxInAnyWindow(admittedMs, trace.windowMs);
    assert.ok(
      most <= trace.limit,
      `${describe(trace)}, clocks up to ${lagMaxMs} ms apart: ${most} admissions stamped ` +
        `inside one rolling window`,
    );
  }
  assert.ok(outOfOrder > 10_000, `only ${outOfOrder} calls out of order: nothing tested`);
});

// ---------------------------------------------------------------------------
// Two isolates

function nextMessage(worker: Worker): Promise<unknown> {
  return new Promise((resolve, reject) => {
    function onMessage(event: MessageEvent<unknown>): void {
      stop();
      resolve(event.data);
    }
    function onError(event: ErrorEvent): void {
      event.preventDefault();
      stop();
      reject(new Error(`worker failed: ${event.message}`));
    }
    function stop(): void {
      worker.removeEventListener("message", onMessage);
      worker.removeEventListener("error", onError);
    }
    worker.addEventListener("message", onMessage);
    worker.addEventListener("error", onError);
  });
}

function isRemainingReport(value: unknown): value is { remainingByEntry: number[][] } {
  return typeof value === "object" && value !== null && "remainingByEntry" in value &&
    Array.isArray(value.remainingByEntry) &&
    value.remainingByEntry.every((list: unknown) =>
      Array.isArray(list) && list.every((n: unknown) => typeof n === "number")
    );
}

Deno.test("WindowTable.tryAdmit() admits exactly the limit across two isolates at one instant", async () => {
  // Rounds on fresh entries, each started together at a barrier, until the
  // isolates have overlapped on some entry (see _window_worker.ts): even if the
  // scheduler runs them in turns, some round will catch them interleaved. A
  // round takes well under a millisecond, so allow enough of them to outlast a
  // busy machine running the isolates in turns for a while.
  const entriesPerRound = 8;
  const roundsMin = 4;
  const roundsMax = 2_000;
  const entries = roundsMax * entriesPerRound;
  const limit = 1_000;
  const nowMs = 5_000;
  const attemptsPerEntry = 1_500;
  const table = new WindowTable(entries);
  for (let index = 0; index < entries; index++) table.init(index, limit, 1_000);
  const barrier = new SharedArrayBuffer(4 * (roundsMax + 2));
  const worker = new Worker(new URL("./_window_worker.ts", import.meta.url).href, {
    type: "module",
  });
  try {
    const arrived = nextMessage(worker);
    worker.postMessage({
      buffer: table.buffer,
      capacity: entries,
      barrier,
      nowMs,
      attemptsPerEntry,
      entriesPerRound,
      roundsMin,
    });
    await arrived;
    const report = nextMessage(worker);
    const shared = new Int32Array(barrier);
    const ours: number[][] = Array.from({ length: entries }, () => []);
    let rounds = 0;
    for (; rounds < roundsMax; rounds++) {
      Atomics.add(shared, 0, 1);
      for (let spins = 0; Atomics.load(shared, 0) < 2 * (rounds + 1); spins++) {
        // A dead worker would leave this synchronous loop spinning for ever.
        if (spins > 2e9) throw new Error(`the worker never reached round ${rounds}`);
      }
      if (rounds >= roundsMin && Atomics.load(shared, 1 + rounds) !== 0) break;
      const first = rounds * entriesPerRound;
      for (let i = 0; i < attemptsPerEntry; i++) {
        for (let index = first; index < first + entriesPerRound; index++) {
          const remaining = table.tryAdmit(index, nowMs);
          if (remaining >= 0) ours[index]?.push(remaining);
        }
      }
      let overlapped = Atomics.load(shared, 1 + rounds) !== 0;
      for (let index = first; index < first + entriesPerRound; index++) {
        const mine = ours[index]?.length ?? 0;
        if (mine > 0 && mine < limit) overlapped = true;
      }
      if (overlapped) Atomics.store(shared, 1 + rounds + 1, 1);
    }
    const theirs = await report;
    assert.ok(isRemainingReport(theirs), "the worker's report has the wrong shape");
    let overlappedEntries = 0;
    for (let index = 0; index < rounds * entriesPerRound; index++) {
      const mine: number[] = ours[index] ?? [];
      const other: number[] = theirs.remainingByEntry[index] ?? [];
      const all: number[] = [...mine, ...other].sort((a, b) => a - b);
      assert.equal(all.length, limit, `entry ${index}: ${mine.length} + ${other.length} admitted`);
      // Each admission saw a distinct count: remaining runs over 0..limit-1 once each.
      assert.deepEqual(all, Array.from({ length: limit }, (_, i) => i), `entry ${index}`);
      assert.equal(table.used(index, nowMs), limit, `entry ${index}: used`);
      if (mine.length > 0 && other.length > 0) overlappedEntries++;
    }
    assert.ok(
      overlappedEntries > 0,
      `in ${rounds} rounds the isolates never admitted on the same entry: no concurrency tested`,
    );
  } finally {
    worker.terminate();
  }
});

function isStampReport(value: unknown): value is { admittedMs: number[][] } {
  return typeof value === "object" && value !== null && "admittedMs" in value &&
    Array.isArray(value.admittedMs) &&
    value.admittedMs.every((list: unknown) =>
      Array.isArray(list) && list.every((n: unknown) => typeof n === "number")
    );
}

Deno.test("WindowTable.tryAdmit() never over-admits by the callers' own stamps across two isolates while the window moves", async () => {
  // Both isolates stamp requests with one shared clock that they move on as
  // they go, each minus a random lag: reads race (a stamp may be older than
  // what the other isolate already admitted), and an isolate preempted between
  // reading the clock and admitting arrives many buckets late. Every entry's
  // admissions, by their stamps, must fit the exact sliding log.
  const configs = [[3, 63], [10, 63], [5, 7], [50, 200], [20, 130], [1, 63], [100, 1_000]] as const;
  const capacity = 4;
  const attempts = 150_000;
  const worker = new Worker(new URL("./_window_clock_worker.ts", import.meta.url).href, {
    type: "module",
  });
  let bothAdmitted = 0;
  try {
    for (let round = 0; round < configs.length * 2; round++) {
      const [limit, windowMs] = configs[round % configs.length] ?? [1, 1];
      const seed = 0x5ca1_0000 + round;
      const skewMaxMs = [0, 3, 40][round % 3] ?? 0;
      const tickEvery = [3, 10, 40][round % 3] ?? 3;
      const what = `seed ${seed} (limit ${limit}, windowMs ${windowMs}, lag ≤ ${skewMaxMs} ms)`;
      const table = new WindowTable(capacity);
      for (let index = 0; index < capacity; index++) table.init(index, limit, windowMs);
      const clock = new SharedArrayBuffer(8);
      Atomics.store(new Int32Array(clock), 0, 1_000 + round);
      const job = { buffer: table.buffer, capacity, clock, attempts, tickEvery, skewMaxMs };
      const report = nextMessage(worker);
      worker.postMessage({ ...job, seed: seed ^ 0x7777 });
      const ours = admitOnSharedClock({ ...job, seed });
      const theirs = await report;
      assert.ok(isStampReport(theirs), "the worker's report has the wrong shape");
      for (let index = 0; index < capacity; index++) {
        const mine = ours[index] ?? [];
        const other = theirs.admittedMs[index] ?? [];
        if (mine.length > 0 && other.length > 0) bothAdmitted++;
        const all = [...mine, ...other].sort((a, b) => a - b);
        const most = maxInAnyWindow(all, windowMs);
        assert.ok(
          most <= limit,
          `${what}, entry ${index}: ${most} admissions stamped in one window`,
        );
      }
    }
  } finally {
    worker.terminate();
  }
  assert.ok(
    bothAdmitted > 0,
    "the isolates never admitted on the same entry: no concurrency tested",
  );
});

/** The steps `_window_clock_worker.ts` runs, for this isolate (see there). */
function admitOnSharedClock(job: {
  buffer: SharedArrayBuffer;
  capacity: number;
  clock: SharedArrayBuffer;
  attempts: number;
  tickEvery: number;
  skewMaxMs: number;
  seed: number;
}): number[][] {
  const table = new WindowTable(job.capacity, job.buffer);
  const clock = new Int32Array(job.clock);
  const admittedMs: number[][] = Array.from({ length: job.capacity }, () => []);
  let state = job.seed >>> 0;
  Atomics.add(clock, 1, 1);
  for (let spins = 0; Atomics.load(clock, 1) < 2; spins++) {
    // A dead worker would leave this synchronous loop spinning for ever.
    if (spins > 2e9) throw new Error("the worker never arrived");
  }
  for (let i = 0; i < job.attempts; i++) {
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    const index = state % job.capacity;
    const lagMs = job.skewMaxMs > 0 ? (state >>> 20) % (job.skewMaxMs + 1) : 0;
    const stampMs = Math.max(0, Atomics.load(clock, 0) - lagMs);
    if (table.tryAdmit(index, stampMs) >= 0) admittedMs[index]?.push(stampMs);
    if ((state >>> 8) % job.tickEvery === 0) Atomics.add(clock, 0, 1);
  }
  return admittedMs;
}
