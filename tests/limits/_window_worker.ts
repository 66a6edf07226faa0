/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A second isolate for `window_table_test.ts`: meets the test at a barrier,
 * then admits against a shared {@linkcode WindowTable} at one fixed instant and
 * posts back the `remaining` of every admission, one list per entry.
 */

import { WindowTable } from "../../src/limits/window_table.ts";

interface WindowJob {
  buffer: SharedArrayBuffer;
  capacity: number;
  barrier: SharedArrayBuffer;
  nowMs: number;
  attemptsPerEntry: number;
}

function isWindowJob(value: unknown): value is WindowJob {
  return typeof value === "object" && value !== null &&
    "buffer" in value && value.buffer instanceof SharedArrayBuffer &&
    "capacity" in value && typeof value.capacity === "number" &&
    "barrier" in value && value.barrier instanceof SharedArrayBuffer &&
    "nowMs" in value && typeof value.nowMs === "number" &&
    "attemptsPerEntry" in value && typeof value.attemptsPerEntry === "number";
}

function admitAll(job: WindowJob): number[][] {
  const table = new WindowTable(job.capacity, job.buffer);
  const barrier = new Int32Array(job.barrier);
  Atomics.add(barrier, 0, 1);
  // Spin, not Atomics.wait: waking up late would let the other isolate run alone.
  while (Atomics.load(barrier, 0) < 2) {
    // the test has not arrived yet
  }
  const remainingByEntry: number[][] = [];
  for (let index = 0; index < job.capacity; index++) {
    const remainings: number[] = [];
    for (let i = 0; i < job.attemptsPerEntry; i++) {
      const remaining = table.tryAdmit(index, job.nowMs);
      if (remaining >= 0) remainings.push(remaining);
    }
    remainingByEntry.push(remainings);
  }
  return remainingByEntry;
}

self.onmessage = function onJob(event: MessageEvent<unknown>): void {
  if (!isWindowJob(event.data)) throw new TypeError("not a window job");
  self.postMessage({ remainingByEntry: admitAll(event.data) });
};
