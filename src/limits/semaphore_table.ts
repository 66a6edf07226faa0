/**
 * @module
 * Counting semaphores for many accounts in one `SharedArrayBuffer`. Acquire is
 * a compare-and-swap loop that never waits: a full semaphore answers "no" at
 * once, which is what a hard concurrency limit needs. The maximum can change
 * in place; a lowered maximum lets holders finish and admits nobody until use
 * falls under it.
 *
 * Both paths are one CAS when uncontended: the first guess at the count is a
 * plain read (each `Atomics.load` is a builtin call costing as much as the
 * rest), and a failed CAS hands back the actual count to try again with. A
 * plain read may be stale, so an answer of "full" or "nothing held" is only
 * given after an atomic read confirms it.
 */

const IN_USE = 0;
const MAX = 1;
/** Int32 words one semaphore takes. */
export const SEMAPHORE_WORDS = 2;

/** Semaphores addressed by index, shared across isolates. */
export class SemaphoreTable {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  #w: Int32Array;

  constructor(capacity: number, buffer?: SharedArrayBuffer) {
    this.capacity = capacity;
    this.buffer = buffer ?? new SharedArrayBuffer(capacity * SEMAPHORE_WORDS * 4);
    this.#w = new Int32Array(this.buffer);
  }

  /** Empties semaphore `index` and sets its maximum. */
  init(index: number, slotsMax: number): void {
    Atomics.store(this.#w, index * SEMAPHORE_WORDS + IN_USE, 0);
    this.setMax(index, slotsMax);
  }

  /** Changes the maximum in place; holders keep their slots. */
  setMax(index: number, slotsMax: number): void {
    if (!Number.isInteger(slotsMax) || slotsMax < 0) {
      throw new RangeError("slotsMax must be a non-negative integer");
    }
    Atomics.store(this.#w, index * SEMAPHORE_WORDS + MAX, slotsMax);
  }

  /**
   * Takes one slot if one is free. Returns the slots in use including this one
   * (≥ 1), or -1 when all are held. Never waits.
   */
  tryAcquire(index: number): number {
    const w = this.#w;
    const at = index * SEMAPHORE_WORDS;
    let max = w[at + MAX] ?? 0;
    let used = w[at + IN_USE] ?? 0;
    for (;;) {
      if (used >= max) {
        max = Atomics.load(w, at + MAX);
        used = Atomics.load(w, at + IN_USE);
        if (used >= max) return -1;
      }
      const seen = Atomics.compareExchange(w, at + IN_USE, used, used + 1);
      if (seen === used) return used + 1;
      used = seen;
    }
  }

  /**
   * Gives one slot back. Callers own exactly-once; see `lease.ts`. A release
   * with no slot held throws, and the count never dips below 0 even for a
   * moment: another isolate could take that for a free slot.
   */
  release(index: number): void {
    const w = this.#w;
    const at = index * SEMAPHORE_WORDS + IN_USE;
    let used = w[at] ?? 0;
    for (;;) {
      if (used <= 0) {
        used = Atomics.load(w, at);
        if (used <= 0) throw new Error(`semaphore ${index} released more often than acquired`);
      }
      const seen = Atomics.compareExchange(w, at, used, used - 1);
      if (seen === used) return;
      used = seen;
    }
  }

  /** Slots held now. */
  inUse(index: number): number {
    return Atomics.load(this.#w, index * SEMAPHORE_WORDS + IN_USE);
  }

  /** The maximum now. */
  max(index: number): number {
    return Atomics.load(this.#w, index * SEMAPHORE_WORDS + MAX);
  }
}
