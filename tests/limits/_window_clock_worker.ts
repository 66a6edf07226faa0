/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A second isolate for `window_table_test.ts`' moving-clock test: it runs
 * {@linkcode admitOnSharedClock} (the test runs the same steps) and posts back
 * the stamps it admitted, one list per entry.
 */

import { WindowTable } from "../../src/limits/window_table.ts";

interface ClockJob {
  buffer: SharedArrayBuffer;
  capacity: number;
  /** Word 0: the shared clock, ms; word 1: the start barrier. */
  clock: SharedArrayBuffer;
  attempts: number;
  tickEvery: number;
  skewMaxMs: number;
  seed: number;
}

function isClockJob(value: unknown): value is ClockJob {
  return typeof value === "object" && value !== null &&
    "buffer" in value && value.buffer instanceof SharedArrayBuffer &&
    "capacity" in value && typeof value.capacity === "number" &&
    "clock" in value && value.clock instanceof SharedArrayBuffer &&
    "attempts" in value && typeof value.attempts === "number" &&
    "tickEvery" in value && typeof value.tickEvery === "number" &&
    "skewMaxMs" in value && typeof value.skewMaxMs === "number" &&
    "seed" in value && typeof value.seed === "number";
}

/**
 * Waits at the barrier for the other isolate, then admits on random entries,
 * each request stamped with the shared clock minus a random lag of up to
 * `skewMaxMs` (a clock read that raced another isolate's, or a slower clock),
 * and moves the clock on one ms every `tickEvery` requests on average.
 * Returns the admitted stamps per entry.
 */
function admitOnSharedClock(job: ClockJob): number[][] {
  const table = new WindowTable(job.capacity, job.buffer);
  const clock = new Int32Array(job.clock);
  const admittedMs: number[][] = Array.from({ length: job.capacity }, () => []);
  let state = job.seed >>> 0;
  Atomics.add(clock, 1, 1);
  // Spin, not Atomics.wait: waking up late would let the other isolate run alone.
  while (Atomics.load(clock, 1) < 2) {
    // the other isolate has not arrived yet
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

self.onmessage = function onJob(event: MessageEvent<unknown>): void {
  if (!isClockJob(event.data)) throw new TypeError("not a clock job");
  self.postMessage({ admittedMs: admitOnSharedClock(event.data) });
};
