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
  /** When the reclaimer may take the slot back (pushed on by {@linkcode renew}). */
  deadlineMs: number;
  /** Slots in use right after this one was taken (for `X-Concurrent-Current`). */
  readonly inUseAtAcquire: number;
  /** Who holds it (an account id), for listeners. */
  readonly owner: string;
  #registry: LeaseRegistry;
  #releasedAs: ReleaseReason | undefined;

  constructor(
    registry: LeaseRegistry,
    index: number,
    inUseAtAcquire: number,
    deadlineMs: number,
    owner: string,
  ) {
    this.#registry = registry;
    this.owner = owner;
    this.index = index;
    this.inUseAtAcquire = inUseAtAcquire;
    this.deadlineMs = deadlineMs;
  }

  /** How the slot was given back, or `undefined` while it is held. */
  get releasedAs(): ReleaseReason | undefined {
    return this.#releasedAs;
  }

  /** Moves the deadline to `deadlineMs` (a long-running holder proving it is alive). */
  renew(deadlineMs: number): void {
    this.deadlineMs = Math.max(this.deadlineMs, deadlineMs);
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
  #listeners = new Set<(lease: Lease) => void>();

  constructor(semaphores: SemaphoreTable, options: LeaseRegistryOptions) {
    this.#semaphores = semaphores;
    this.#leaseMs = options.leaseMs;
  }

  /**
   * Takes a slot of semaphore `index` at `nowMs` for `owner`, or `undefined`
   * if none is free.
   */
  tryAcquire(index: number, nowMs: number, owner = ""): Lease | undefined {
    const inUse = this.#semaphores.tryAcquire(index);
    if (inUse < 0) return undefined;
    const lease = new Lease(this, index, inUse, nowMs + this.#leaseMs, owner);
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
    for (const listener of this.#listeners) listener(lease);
  }

  /** Calls `listener` after every release (a slot just became free). */
  onRelease(listener: (lease: Lease) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Releases every lease past its deadline at `nowMs`; returns how many. */
  reclaimOverdue(nowMs: number): number {
    let count = 0;
    for (const lease of this.#held) {
      if (lease.deadlineMs <= nowMs && lease.release("reclaimed")) count++;
    }
    return count;
  }

  /** How long a fresh lease lasts. */
  get leaseMs(): number {
    return this.#leaseMs;
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
