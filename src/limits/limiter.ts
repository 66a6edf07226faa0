/**
 * @module
 * The limiter: window counters and slot semaphores addressed by name. It maps
 * a bucket key ("acme", "acme:key_1", "acme:/v1/limits") to an entry of the
 * shared {@linkcode WindowTable}, applies the current limits in place on each
 * lookup (so plan changes are live on the next request without resetting
 * counts), and reclaims entries nobody used for a while so that memory stays
 * bounded by `capacity`, not by the number of accounts ever seen.
 */

import { LeaseRegistry } from "./lease.ts";
import { SemaphoreTable } from "./semaphore_table.ts";
import { WindowTable } from "./window_table.ts";

/** A rate limit: `requests` per rolling `windowMs`. */
export interface RateShape {
  requests: number;
  windowMs: number;
}

/** Options for {@linkcode Limiter}. */
export interface LimiterOptions {
  /** Window entries the table holds at most. */
  windowCapacity?: number;
  /** Semaphores (accounts with concurrency state) at most. */
  semaphoreCapacity?: number;
  /** How long a slot may be held before it is reclaimed as a leak. */
  leaseMs?: number;
  /** Subtracted from every `nowMs`, so that table times stay small. */
  epochMs?: number;
  /**
   * Tables shared with another isolate (a data-plane worker). A limiter built
   * on them never creates entries itself: it uses the assignment the owning
   * isolate sends ({@linkcode Limiter.importAssignment}).
   */
  shared?: SharedTables;
}

/** The buffers behind a limiter, for handing to another isolate. */
export interface SharedTables {
  windows: SharedArrayBuffer;
  windowCapacity: number;
  semaphores: SharedArrayBuffer;
  semaphoreCapacity: number;
}

/** Which entry each bucket and account uses, as sent to worker isolates. */
export interface Assignment {
  windows: [key: string, index: number, requests: number, windowMs: number][];
  semaphores: [account: string, index: number][];
}

interface WindowEntry {
  index: number;
  requests: number;
  windowMs: number;
}

/** Thrown when no entry can be had: the table is full, or a worker was not assigned one. */
export class CapacityError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CapacityError";
  }
}

/** Named sliding windows and semaphores over shared tables. */
export class Limiter {
  readonly windows: WindowTable;
  readonly semaphores: SemaphoreTable;
  readonly leases: LeaseRegistry;
  readonly epochMs: number;
  #windowByKey = new Map<string, WindowEntry>();
  #freeWindows: number[] = [];
  #nextWindow = 0;
  #semaphoreByKey = new Map<string, number>();
  #nextSemaphore = 0;
  #freeSemaphores: number[] = [];
  #assignedOnly: boolean;

  constructor(options: LimiterOptions = {}) {
    const {
      windowCapacity = 131_072,
      semaphoreCapacity = 131_072,
      leaseMs = 330_000,
      epochMs = 0,
      shared,
    } = options;
    this.#assignedOnly = shared !== undefined;
    this.windows = shared === undefined
      ? new WindowTable(windowCapacity)
      : new WindowTable(shared.windowCapacity, shared.windows);
    this.semaphores = shared === undefined
      ? new SemaphoreTable(semaphoreCapacity)
      : new SemaphoreTable(shared.semaphoreCapacity, shared.semaphores);
    this.leases = new LeaseRegistry(this.semaphores, { leaseMs });
    this.epochMs = epochMs;
  }

  /** Window entries in use. */
  get windowCount(): number {
    return this.#windowByKey.size;
  }

  /** The buffers, for a worker isolate to build its limiter on. */
  sharedTables(): SharedTables {
    return {
      windows: this.windows.buffer,
      windowCapacity: this.windows.capacity,
      semaphores: this.semaphores.buffer,
      semaphoreCapacity: this.semaphores.capacity,
    };
  }

  /**
   * Creates (or brings to shape) the entries for every bucket and account
   * given, and returns the whole assignment for worker isolates. Run by the
   * owning isolate on every config swap, before workers see the new config.
   */
  assign(
    buckets: Iterable<[string, RateShape]>,
    accounts: Iterable<[string, number]>,
    nowMs: number,
  ): Assignment {
    const assignment: Assignment = { windows: [], semaphores: [] };
    for (const [key, shape] of buckets) {
      const index = this.windowIndex(key, shape, nowMs);
      assignment.windows.push([key, index, shape.requests, shape.windowMs]);
    }
    for (const [account, slotsMax] of accounts) {
      assignment.semaphores.push([account, this.semaphoreIndex(account, slotsMax)]);
    }
    return assignment;
  }

  /** Replaces this (worker) limiter's view of which entry is whose. */
  importAssignment(assignment: Assignment): void {
    this.#windowByKey = new Map(
      assignment.windows.map(([key, index, requests, windowMs]) => [
        key,
        { index, requests, windowMs },
      ]),
    );
    this.#semaphoreByKey = new Map(assignment.semaphores);
  }

  /**
   * Admits one request for `key` under `shape` at `nowMs`. Returns the
   * remaining count (≥ 0) when admitted, -1 when denied.
   */
  tryAdmit(key: string, shape: RateShape, nowMs: number): number {
    return this.windows.tryAdmit(this.windowIndex(key, shape, nowMs), nowMs - this.epochMs);
  }

  /** The entry of `key`, created or brought to `shape` as needed. */
  windowIndex(key: string, shape: RateShape, nowMs: number): number {
    const entry = this.#windowByKey.get(key);
    if (entry === undefined) {
      if (this.#assignedOnly) throw new CapacityError(`no window assigned for "${key}"`);
      const index = this.#allocWindow(nowMs);
      this.windows.init(index, shape.requests, shape.windowMs);
      this.#windowByKey.set(key, { index, ...shape });
      return index;
    }
    if (entry.windowMs !== shape.windowMs) {
      // A worker leaves reshaping to the owner, which does it before the new config arrives.
      if (!this.#assignedOnly) this.#reshape(entry, shape, nowMs);
    } else if (entry.requests !== shape.requests) {
      this.windows.setLimit(entry.index, shape.requests);
      entry.requests = shape.requests;
    }
    return entry.index;
  }

  /** Milliseconds until `key`'s window admits `needed` more (0 if it would now). */
  msUntilFree(key: string, nowMs: number, needed = 1): number {
    const entry = this.#windowByKey.get(key);
    if (entry === undefined) return 0;
    return this.windows.msUntilFree(entry.index, nowMs - this.epochMs, needed);
  }

  /** Requests `key`'s window counts at `nowMs`. */
  used(key: string, nowMs: number): number {
    const entry = this.#windowByKey.get(key);
    return entry === undefined ? 0 : this.windows.used(entry.index, nowMs - this.epochMs);
  }

  /** The semaphore of `account`, created or resized to `slotsMax` as needed. */
  semaphoreIndex(account: string, slotsMax: number): number {
    let index = this.#semaphoreByKey.get(account);
    if (index === undefined) {
      if (this.#assignedOnly) throw new CapacityError(`no semaphore assigned for "${account}"`);
      index = this.#freeSemaphores.pop() ?? this.#nextSemaphore++;
      if (index >= this.semaphores.capacity) throw new CapacityError("semaphore table is full");
      this.semaphores.init(index, slotsMax);
      this.#semaphoreByKey.set(account, index);
    } else if (this.semaphores.max(index) !== slotsMax) {
      this.semaphores.setMax(index, slotsMax);
    }
    return index;
  }

  /** Slots `account` holds now (0 if it has no semaphore yet). */
  slotsInUse(account: string): number {
    const index = this.#semaphoreByKey.get(account);
    return index === undefined ? 0 : this.semaphores.inUse(index);
  }

  /**
   * Frees window entries idle for longer than their window (all their counts
   * have expired, so forgetting them changes no decision) and semaphores of
   * accounts that hold no slot and are not in `keepAccounts`.
   */
  reclaimIdle(
    nowMs: number,
    keepAccounts?: ReadonlySet<string>,
    keepWindows?: ReadonlySet<string>,
  ): number {
    let freed = 0;
    const tableNowS = (nowMs - this.epochMs) / 1000;
    for (const [key, entry] of this.#windowByKey) {
      if (keepWindows?.has(key)) continue;
      const idleS = tableNowS - this.windows.lastSeenSeconds(entry.index);
      if (idleS * 1000 > entry.windowMs + 1000) {
        this.#windowByKey.delete(key);
        this.#freeWindows.push(entry.index);
        freed++;
      }
    }
    if (keepAccounts !== undefined) {
      for (const [account, index] of this.#semaphoreByKey) {
        if (keepAccounts.has(account) || this.semaphores.inUse(index) > 0) continue;
        this.#semaphoreByKey.delete(account);
        this.#freeSemaphores.push(index);
        freed++;
      }
    }
    return freed;
  }

  #allocWindow(nowMs: number): number {
    let index = this.#freeWindows.pop();
    if (index !== undefined) return index;
    if (this.#nextWindow < this.windows.capacity) return this.#nextWindow++;
    this.reclaimIdle(nowMs);
    index = this.#freeWindows.pop();
    if (index === undefined) throw new CapacityError("window table is full");
    return index;
  }

  /**
   * A new window length cannot reuse the old buckets; carry what the old
   * window counts into the new one so the change never over-admits.
   */
  #reshape(entry: WindowEntry, shape: RateShape, nowMs: number): void {
    const tableNowMs = nowMs - this.epochMs;
    const carried = this.windows.used(entry.index, tableNowMs);
    this.windows.init(entry.index, shape.requests, shape.windowMs);
    for (let i = 0; i < carried; i++) {
      if (this.windows.tryAdmit(entry.index, tableNowMs) < 0) break;
    }
    entry.requests = shape.requests;
    entry.windowMs = shape.windowMs;
  }
}
