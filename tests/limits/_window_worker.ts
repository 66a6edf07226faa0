/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * A second isolate for `window_table_test.ts`; it runs {@linkcode admitInRounds}
 * (the test runs the same steps) and posts back the `remaining` of every
 * admission, one list per entry.
 */

import { WindowTable } from "../../src/limits/window_table.ts";

interface WindowJob {
  buffer: SharedArrayBuffer;
  capacity: number;
  barrier: SharedArrayBuffer;
  nowMs: number;
  attemptsPerEntry: number;
  entriesPerRound: number;
  roundsMin: number;
}

function isWindowJob(value: unknown): value is WindowJob {
  return typeof value === "object" && value !== null &&
    "buffer" in value && value.buffer instanceof SharedArrayBuffer &&
    "capacity" in value && typeof value.capacity === "number" &&
    "barrier" in value && value.barrier instanceof SharedArrayBuffer &&
    "nowMs" in value && typeof value.nowMs === "number" &&
    "attemptsPerEntry" in value && typeof value.attemptsPerEntry === "number" &&
    "entriesPerRound" in value && typeof value.entriesPerRound === "number" &&
    "roundsMin" in value && typeof value.roundsMin === "number";
}

/**
 * Round after round on fresh entries, each round started together at a
 * barrier (word 0): admit at one instant, round-robin over the round's
 * entries. An isolate that admitted some but not all of an entry's limit saw
 * the other isolate at work, and says so in word 1 + round + 1 before the next
 * barrier; both read that word only after passing it, so both stop after the
 * same round: the first one past `roundsMin` with an overlap seen so far.
 */
function admitInRounds(job: WindowJob): number[][] {
  const table = new WindowTable(job.capacity, job.buffer);
  const shared = new Int32Array(job.barrier);
  const limit = table.limit(0);
  const remainingByEntry: number[][] = Array.from({ length: job.capacity }, () => []);
  const roundsMax = job.capacity / job.entriesPerRound;
  for (let round = 0; round < roundsMax; round++) {
    Atomics.add(shared, 0, 1);
    if (round === 0) self.postMessage({ arrived: true });
    // Spin, not Atomics.wait: waking up late would let the other isolate run alone.
    while (Atomics.load(shared, 0) < 2 * (round + 1)) {
      // the other isolate has not arrived yet
    }
    if (round >= job.roundsMin && Atomics.load(shared, 1 + round) !== 0) break;
    const first = round * job.entriesPerRound;
    for (let i = 0; i < job.attemptsPerEntry; i++) {
      for (let index = first; index < first + job.entriesPerRound; index++) {
        const remaining = table.tryAdmit(index, job.nowMs);
        if (remaining >= 0) remainingByEntry[index]?.push(remaining);
      }
    }
    let overlapped = Atomics.load(shared, 1 + round) !== 0;
    for (let index = first; index < first + job.entriesPerRound; index++) {
      const mine = remainingByEntry[index]?.length ?? 0;
      if (mine > 0 && mine < limit) overlapped = true;
    }
    if (overlapped) Atomics.store(shared, 1 + round + 1, 1);
  }
  return remainingByEntry;
}

self.onmessage = function onJob(event: MessageEvent<unknown>): void {
  if (!isWindowJob(event.data)) throw new TypeError("not a window job");
  self.postMessage({ remainingByEntry: admitInRounds(event.data) });
};
