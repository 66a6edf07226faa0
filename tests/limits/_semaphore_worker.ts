/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A second isolate for `semaphore_table_test.ts`. It arrives at a barrier,
 * says so, waits for the test to arrive too, then works on the shared
 * {@linkcode SemaphoreTable} and posts back what it saw:
 * - `"hammer"`: take one or two slots, sample `inUse` while holding them, give
 *   them back; repeat until both isolates together were denied
 *   `deniedTarget` times (proof they overlapped), or `roundsMax` rounds;
 * - `"over-release"`: call `release()` on a semaphore nobody holds, `roundsMax`
 *   times.
 */

import { SemaphoreTable } from "../../src/limits/semaphore_table.ts";

interface SemaphoreJob {
  mode: "hammer" | "over-release";
  buffer: SharedArrayBuffer;
  capacity: number;
  index: number;
  barrier: SharedArrayBuffer;
  roundsMin: number;
  roundsMax: number;
  deniedTarget: number;
  seed: number;
}

function isSemaphoreJob(value: unknown): value is SemaphoreJob {
  return typeof value === "object" && value !== null &&
    "mode" in value && (value.mode === "hammer" || value.mode === "over-release") &&
    "buffer" in value && value.buffer instanceof SharedArrayBuffer &&
    "capacity" in value && typeof value.capacity === "number" &&
    "index" in value && typeof value.index === "number" &&
    "barrier" in value && value.barrier instanceof SharedArrayBuffer &&
    "roundsMin" in value && typeof value.roundsMin === "number" &&
    "roundsMax" in value && typeof value.roundsMax === "number" &&
    "deniedTarget" in value && typeof value.deniedTarget === "number" &&
    "seed" in value && typeof value.seed === "number";
}

function meetAtBarrier(barrier: Int32Array): void {
  Atomics.add(barrier, 0, 1);
  self.postMessage({ arrived: true });
  // Spin, not Atomics.wait: waking up late would let the other isolate run alone.
  while (Atomics.load(barrier, 0) < 2) {
    // the test has not arrived yet
  }
}

const DENIED = 1; // barrier word counting both isolates' denials

function hammer(
  table: SemaphoreTable,
  job: SemaphoreJob,
  shared: Int32Array,
): Record<string, number> {
  let state = job.seed >>> 0;
  let acquired = 0;
  let denied = 0;
  let outOfRange = 0;
  let maxSeen = 0;
  let minSeen = Number.MAX_SAFE_INTEGER;
  for (let round = 0; round < job.roundsMax; round++) {
    if (round >= job.roundsMin && Atomics.load(shared, DENIED) >= job.deniedTarget) break;
    state = (Math.imul(state, 1_664_525) + 1_013_904_223) >>> 0;
    const wanted = 1 + (state >>> 31);
    let held = 0;
    for (let i = 0; i < wanted; i++) {
      const inUse = table.tryAcquire(job.index);
      if (inUse < 0) {
        denied++;
        Atomics.add(shared, DENIED, 1);
        continue;
      }
      if (inUse < 1 || inUse > table.max(job.index)) outOfRange++;
      acquired++;
      held++;
    }
    // Hold the slots a while, so that the other isolate meets them.
    for (let i = 0; i < 4; i++) {
      const sample = table.inUse(job.index);
      maxSeen = Math.max(maxSeen, sample);
      minSeen = Math.min(minSeen, sample);
    }
    for (let i = 0; i < held; i++) table.release(job.index);
  }
  return { acquired, denied, outOfRange, maxSeen, minSeen };
}

function overRelease(table: SemaphoreTable, job: SemaphoreJob): Record<string, number> {
  let threw = 0;
  let released = 0;
  for (let round = 0; round < job.roundsMax; round++) {
    try {
      table.release(job.index);
      released++;
    } catch {
      threw++;
    }
  }
  return { threw, released };
}

self.onmessage = function onJob(event: MessageEvent<unknown>): void {
  const job = event.data;
  if (!isSemaphoreJob(job)) throw new TypeError("not a semaphore job");
  const table = new SemaphoreTable(job.capacity, job.buffer);
  const shared = new Int32Array(job.barrier);
  meetAtBarrier(shared);
  const report = job.mode === "hammer" ? hammer(table, job, shared) : overRelease(table, job);
  self.postMessage(report);
};
