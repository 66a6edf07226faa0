/**
 * @module
 * Concurrency slots as leases. A {@linkcode Lease} gives its slot back exactly
 * once, whoever calls first: the end of a response body, a client abort, an
 * upstream error, or the reclaimer when the lease outlives its deadline. A
 * second release is a no-op by construction, not by the callers' care.
 */

import type { SemaphoreTable } from "./semaphore_table.ts";

/** Why a slot was given back. */
export type ReleaseReason = "done" | "aborted" | "error" | "reclaimed";

/** One held concurrency slot. */
export class Lease {
  readonly index: number;
  readonly deadlineMs: number;
  /** Slots in use right after this one was taken (for `X-Concurrent-Current`). */
  readonly inUseAtAcquire: number;
  #registry: LeaseRegistry;
  #releasedAs: ReleaseReason | undefined;

  constructor(registry: LeaseRegistry, index: number, inUseAtAcquire: number, deadlineMs: number) {
    this.#registry = registry;
    this.index = index;
    this.inUseAtAcquire = inUseAtAcquire;
    this.deadlineMs = deadlineMs;
  }

  /** How the slot was given back, or `undefined` while it is held. */
  get releasedAs(): ReleaseReason | undefined {
    return this.#releasedAs;
  }

  /** Gives the slot back; true the first time, false on every later call. */
  release(reason: ReleaseReason = "done"): boolean {
    if (this.#releasedAs !== undefined) return false;
    this.#releasedAs = reason;
    this.#registry.forget(this);
    return true;
  }

  [Symbol.dispose](): void {
    this.release("error");
  }
}

/** Counters of what happened to leases, for metrics and tests. */
export interface LeaseStats {
  acquired: number;
  released: number;
  reclaimed: number;
}

/** Options for {@linkcode LeaseRegistry}. */
export interface LeaseRegistryOptions {
  /** How long a lease may be held before it is reclaimed as a leak. */
  leaseMs: number;
}

/** Hands out leases on a {@linkcode SemaphoreTable} and reclaims overdue ones. */
export class LeaseRegistry {
  #semaphores: SemaphoreTable;
  #leaseMs: number;
  #held = new Set<Lease>();
  #stats: LeaseStats = { acquired: 0, released: 0, reclaimed: 0 };

  constructor(semaphores: SemaphoreTable, options: LeaseRegistryOptions) {
    this.#semaphores = semaphores;
    this.#leaseMs = options.leaseMs;
  }

  /** Takes a slot of semaphore `index` at `nowMs`, or `undefined` if none is free. */
  tryAcquire(index: number, nowMs: number): Lease | undefined {
    const inUse = this.#semaphores.tryAcquire(index);
    if (inUse < 0) return undefined;
    const lease = new Lease(this, index, inUse, nowMs + this.#leaseMs);
    this.#held.add(lease);
    this.#stats.acquired++;
    return lease;
  }

  /** Called by {@linkcode Lease.release} only, once per lease. */
  forget(lease: Lease): void {
    if (!this.#held.delete(lease)) return;
    this.#semaphores.release(lease.index);
    if (lease.releasedAs === "reclaimed") this.#stats.reclaimed++;
    else this.#stats.released++;
  }

  /** Releases every lease past its deadline at `nowMs`; returns how many. */
  reclaimOverdue(nowMs: number): number {
    let count = 0;
    for (const lease of this.#held) {
      if (lease.deadlineMs <= nowMs && lease.release("reclaimed")) count++;
    }
    return count;
  }

  /** Leases held by this isolate. */
  get heldCount(): number {
    return this.#held.size;
  }

  /** A copy of the counters. */
  stats(): LeaseStats {
    return { ...this.#stats };
  }
}
