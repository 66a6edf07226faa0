/**
 * Tests for {@linkcode SemaphoreTable}: a hard, never-waiting concurrency
 * limit. Randomized tests use a seeded PRNG and print the seed on failure; the
 * cross-isolate tests share the table's buffer with a real worker.
 */

import assert from "node:assert/strict";
import { SemaphoreTable } from "../../src/limits/semaphore_table.ts";

type Rng = () => number;

/** mulberry32: tiny, fast, and good enough to shuffle operations reproducibly. */
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

function intBetween(rng: Rng, lo: number, hi: number): number {
  return lo + Math.floor(rng() * (hi - lo + 1));
}

function acquireAll(table: SemaphoreTable, index: number, attempts: number): number[] {
  const results: number[] = [];
  for (let i = 0; i < attempts; i++) results.push(table.tryAcquire(index));
  return results;
}

// ---------------------------------------------------------------------------
// One isolate

Deno.test("SemaphoreTable.tryAcquire() grants exactly max slots, then answers -1 at once", () => {
  for (const slotsMax of [0, 1, 2, 20, 100]) {
    const table = new SemaphoreTable(1);
    table.init(0, slotsMax);
    const results = acquireAll(table, 0, slotsMax + 3);
    const expected = [...Array.from({ length: slotsMax }, (_, i) => i + 1), -1, -1, -1];
    assert.deepEqual(results, expected, `slotsMax ${slotsMax}`);
    assert.equal(table.inUse(0), slotsMax);
    assert.equal(table.max(0), slotsMax);
  }
});

Deno.test("SemaphoreTable.release() gives back exactly one slot, and a release too many throws and keeps the count", () => {
  const table = new SemaphoreTable(1);
  table.init(0, 3);
  acquireAll(table, 0, 3);
  table.release(0);
  assert.equal(table.inUse(0), 2);
  assert.equal(table.tryAcquire(0), 3, "the released slot is free again");
  assert.equal(table.tryAcquire(0), -1);
  for (let i = 0; i < 3; i++) table.release(0);
  assert.equal(table.inUse(0), 0);
  assert.throws(() => table.release(0), /released more often than acquired/);
  assert.equal(table.inUse(0), 0, "the failed release leaves the count at 0");
  assert.throws(() => table.release(0));
  assert.equal(table.inUse(0), 0);
  assert.deepEqual(acquireAll(table, 0, 4), [1, 2, 3, -1], "no phantom slot after over-release");
});

Deno.test("SemaphoreTable never exceeds max under a random interleaving of holders", () => {
  for (let i = 0; i < 50; i++) {
    const seed = 0x5e3a_0000 + i;
    const rng = mulberry32(seed);
    const slotsMax = intBetween(rng, 1, 12);
    const table = new SemaphoreTable(1);
    table.init(0, slotsMax);
    let held = 0;
    for (let step = 0; step < 2_000; step++) {
      const what = `seed ${seed} (slotsMax ${slotsMax}), step ${step}, ${held} held`;
      if (rng() < 0.55) {
        const inUse = table.tryAcquire(0);
        if (held < slotsMax) {
          assert.equal(inUse, held + 1, `${what}: acquire`);
          held++;
        } else {
          assert.equal(inUse, -1, `${what}: acquire when full`);
        }
      } else if (held > 0) {
        table.release(0);
        held--;
      } else {
        assert.throws(() => table.release(0), `${what}: release with nothing held`);
      }
      assert.equal(table.inUse(0), held, what);
      assert.ok(table.inUse(0) <= slotsMax, what);
    }
  }
});

Deno.test("SemaphoreTable.setMax() raised frees the new slots for the very next acquire", () => {
  const table = new SemaphoreTable(1);
  table.init(0, 2);
  acquireAll(table, 0, 2);
  assert.equal(table.tryAcquire(0), -1);
  table.setMax(0, 5);
  assert.deepEqual(acquireAll(table, 0, 4), [3, 4, 5, -1]);
  assert.equal(table.inUse(0), 5);
});

Deno.test("SemaphoreTable.setMax() lowered lets holders keep their slots and denies until use is under the new max", () => {
  const table = new SemaphoreTable(1);
  table.init(0, 10);
  acquireAll(table, 0, 8);
  table.setMax(0, 3);
  assert.equal(table.inUse(0), 8, "holders keep their slots");
  assert.equal(table.tryAcquire(0), -1);
  for (let held = 8; held > 3; held--) {
    table.release(0);
    assert.equal(table.tryAcquire(0), -1, `denied with ${held - 1} held and max 3`);
  }
  table.release(0);
  assert.equal(table.inUse(0), 2);
  assert.equal(table.tryAcquire(0), 3, "admitted once use is under the new max");
  assert.equal(table.tryAcquire(0), -1);
});

Deno.test("SemaphoreTable keeps semaphores at different indexes apart", () => {
  const table = new SemaphoreTable(3);
  table.init(0, 1);
  table.init(1, 2);
  table.init(2, 3);
  assert.deepEqual(acquireAll(table, 1, 3), [1, 2, -1]);
  assert.deepEqual(acquireAll(table, 0, 2), [1, -1]);
  assert.deepEqual(acquireAll(table, 2, 4), [1, 2, 3, -1]);
  table.release(1);
  assert.deepEqual([table.inUse(0), table.inUse(1), table.inUse(2)], [1, 1, 3]);
  assert.throws(() => table.setMax(0, -1), RangeError);
  assert.throws(() => table.setMax(0, 1.5), RangeError);
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

/** A number field of a worker's report, or a test failure naming it. */
function field(report: unknown, name: string): number {
  if (typeof report !== "object" || report === null || !(name in report)) {
    throw new TypeError(`the worker's report has no ${name}`);
  }
  const value: unknown = Object.getOwnPropertyDescriptor(report, name)?.value;
  if (typeof value !== "number") throw new TypeError(`the worker's ${name} is not a number`);
  return value;
}

/**
 * Starts the worker on `job`, waits until it is at the barrier, then runs
 * `work` here while it runs there; returns the worker's report. `work` gets
 * the shared words: [0] the barrier, [1] denials counted by both isolates.
 */
async function alongsideWorker(
  job: Record<string, unknown>,
  work: (shared: Int32Array) => void,
): Promise<unknown> {
  const worker = new Worker(new URL("./_semaphore_worker.ts", import.meta.url).href, {
    type: "module",
  });
  try {
    const barrier = new SharedArrayBuffer(8);
    const arrived = nextMessage(worker);
    worker.postMessage({ ...job, barrier });
    await arrived;
    const report = nextMessage(worker);
    const shared = new Int32Array(barrier);
    Atomics.add(shared, 0, 1);
    work(shared);
    return await report;
  } finally {
    worker.terminate();
  }
}

Deno.test("SemaphoreTable never exceeds max while two isolates acquire and release one semaphore", async () => {
  const seed = 0x5a17;
  const slotsMax = 3;
  // Each isolate holds at most two at a time, so with max 3 a denial means the
  // two really overlapped. Both go on until they have been denied
  // `deniedTarget` times together, even if the scheduler runs them in turns.
  const job = { roundsMin: 100_000, roundsMax: 20_000_000, deniedTarget: 1_000 };
  const table = new SemaphoreTable(4);
  table.init(2, slotsMax);
  const rng = mulberry32(seed);
  let acquired = 0;
  let denied = 0;
  let maxSeen = 0;
  let minSeen = Number.MAX_SAFE_INTEGER;
  let outOfRange = 0;
  const report = await alongsideWorker(
    { ...job, mode: "hammer", buffer: table.buffer, capacity: 4, index: 2, seed: seed + 1 },
    (shared) => {
      for (let round = 0; round < job.roundsMax; round++) {
        if (round >= job.roundsMin && Atomics.load(shared, 1) >= job.deniedTarget) break;
        const wanted = rng() < 0.5 ? 1 : 2;
        let held = 0;
        for (let i = 0; i < wanted; i++) {
          const inUse = table.tryAcquire(2);
          if (inUse < 0) {
            denied++;
            Atomics.add(shared, 1, 1);
            continue;
          }
          if (inUse < 1 || inUse > slotsMax) outOfRange++;
          acquired++;
          held++;
        }
        for (let i = 0; i < 4; i++) {
          const sample = table.inUse(2);
          maxSeen = Math.max(maxSeen, sample);
          minSeen = Math.min(minSeen, sample);
        }
        for (let i = 0; i < held; i++) table.release(2);
      }
    },
  );
  const what = `seed ${seed}: here ${acquired} acquired / ${denied} denied, worker ` +
    `${field(report, "acquired")} / ${field(report, "denied")}`;
  assert.equal(outOfRange + field(report, "outOfRange"), 0, `${what}: in-use out of 1..max`);
  assert.ok(Math.max(maxSeen, field(report, "maxSeen")) <= slotsMax, `${what}: above max`);
  assert.ok(Math.min(minSeen, field(report, "minSeen")) >= 0, `${what}: negative`);
  assert.equal(table.inUse(2), 0, `${what}: slots leaked`);
  assert.ok(denied + field(report, "denied") > 0, `${what}: the isolates never overlapped`);
  for (const index of [0, 1, 3]) assert.equal(table.inUse(index), 0, `neighbour ${index}`);
});

Deno.test("SemaphoreTable.release() past zero in one isolate never lets another see a slot", async () => {
  const rounds = 300_000;
  const table = new SemaphoreTable(1);
  table.init(0, 0);
  let granted = 0;
  let negative = 0;
  const report = await alongsideWorker(
    {
      mode: "over-release",
      buffer: table.buffer,
      capacity: 1,
      index: 0,
      roundsMin: rounds,
      roundsMax: rounds,
      deniedTarget: 0,
      seed: 0,
    },
    () => {
      for (let round = 0; round < rounds; round++) {
        if (table.tryAcquire(0) >= 0) granted++;
        if (table.inUse(0) < 0) negative++;
      }
    },
  );
  const seen =
    `worker: ${field(report, "released")} releases succeeded, ${field(report, "threw")} threw; ` +
    `here: ${granted} slots granted at max 0, inUse() ${negative} times below 0`;
  assert.equal(field(report, "released"), 0, `${seen}: a release with nothing held succeeded`);
  assert.equal(field(report, "threw"), rounds);
  assert.equal(granted, 0, "a slot was granted while max is 0");
  assert.equal(negative, 0, "inUse() was seen below 0");
  assert.equal(table.inUse(0), 0);
});
