/**
 * @module
 * The live configuration as one immutable snapshot, and the one reference
 * that points to it. A reload builds a whole new snapshot and swaps the
 * reference; nothing is ever changed field by field, so a request sees either
 * the old config or the new one, never a mix.
 */

import { createHash } from "node:crypto";
import { hashesEqual } from "./api_key.ts";
import { type Plan, type PlansFile, resolvePlan, validatePlansFile } from "./schema.ts";
import type { FieldError } from "./schema.ts";

/** An account with its plan resolved. */
export interface Account {
  readonly id: string;
  readonly plan: Plan;
  readonly webhookSecret: string | undefined;
}

/** Who a key belongs to. */
export interface KeyOwner {
  readonly account: Account;
  readonly keyId: string;
  readonly hash: string;
}

/** One loaded configuration. */
export interface ConfigSnapshot {
  readonly plans: ReadonlyMap<string, Plan>;
  readonly accounts: ReadonlyMap<string, Account>;
  /** Live (not revoked) keys by stored hash. */
  readonly keysByHash: ReadonlyMap<string, KeyOwner>;
  /** SHA-256 of the file's canonical JSON, to tell versions apart. */
  readonly version: string;
  readonly loadedAt: Date;
  /** The document as written, for the admin API and writes. */
  readonly document: PlansFile;
}

/** The result of building a snapshot. */
export type SnapshotResult =
  | { ok: true; snapshot: ConfigSnapshot }
  | { ok: false; errors: FieldError[] };

/** Validates `value` and builds a snapshot from it; `now` stamps the load time. */
export function buildSnapshot(value: unknown, now: Date): SnapshotResult {
  const result = validatePlansFile(value);
  if (!result.ok) return result;
  const plans = new Map<string, Plan>();
  for (const [name, written] of Object.entries(result.file.plans)) {
    plans.set(name, Object.freeze(resolvePlan(name, written)));
  }
  const accounts = new Map<string, Account>();
  const keysByHash = new Map<string, KeyOwner>();
  for (const [id, written] of Object.entries(result.file.accounts)) {
    const plan = plans.get(written.plan);
    if (plan === undefined) continue; // unreachable: the schema checked it
    const account = Object.freeze({ id, plan, webhookSecret: written.webhookSecret });
    accounts.set(id, account);
    for (const key of written.keys) {
      if (key.revokedAt !== undefined) continue;
      keysByHash.set(key.hash, Object.freeze({ account, keyId: key.id, hash: key.hash }));
    }
  }
  const canonical = JSON.stringify(result.file);
  return {
    ok: true,
    snapshot: Object.freeze({
      plans,
      accounts,
      keysByHash,
      version: createHash("sha256").update(canonical).digest("hex").slice(0, 16),
      loadedAt: now,
      document: result.file,
    }),
  };
}

/** Finds the live owner of a stored key hash, confirming in constant time. */
export function findKeyOwner(snapshot: ConfigSnapshot, hash: string): KeyOwner | undefined {
  const owner = snapshot.keysByHash.get(hash);
  return owner !== undefined && hashesEqual(owner.hash, hash) ? owner : undefined;
}

/** What the last reload attempt did. */
export interface ReloadStatus {
  readonly ok: boolean;
  readonly at: Date;
  readonly errors: readonly FieldError[];
  readonly source: string;
}

/** The one mutable reference to the live snapshot, plus the last reload's outcome. */
export class ConfigStore {
  #current: ConfigSnapshot;
  #lastReload: ReloadStatus;
  #listeners = new Set<(snapshot: ConfigSnapshot) => void>();
  #propagators = new Set<(snapshot: ConfigSnapshot) => Promise<void>>();

  constructor(initial: ConfigSnapshot, source = "startup") {
    this.#current = initial;
    this.#lastReload = { ok: true, at: initial.loadedAt, errors: [], source };
  }

  /** The live snapshot. */
  get current(): ConfigSnapshot {
    return this.#current;
  }

  /** The outcome of the most recent load attempt. */
  get lastReload(): ReloadStatus {
    return this.#lastReload;
  }

  /** Swaps in a new snapshot and tells listeners. */
  replace(next: ConfigSnapshot, source: string): void {
    this.#current = next;
    this.#lastReload = { ok: true, at: next.loadedAt, errors: [], source };
    for (const listener of this.#listeners) listener(next);
  }

  /**
   * Swaps in `next` like {@linkcode replace}, then waits until every
   * propagator (e.g. the worker isolates) has it too.
   */
  async publish(next: ConfigSnapshot, source: string): Promise<void> {
    this.replace(next, source);
    await Promise.all([...this.#propagators].map((propagate) => propagate(next)));
  }

  /** Registers a step {@linkcode publish} waits for; returns the unregister function. */
  addPropagator(propagate: (snapshot: ConfigSnapshot) => Promise<void>): () => void {
    this.#propagators.add(propagate);
    return () => this.#propagators.delete(propagate);
  }

  /** Records a failed load; the live snapshot stays. */
  reject(errors: readonly FieldError[], at: Date, source: string): void {
    this.#lastReload = { ok: false, at, errors, source };
  }

  /** Calls `listener` after every swap; returns the unsubscribe function. */
  subscribe(listener: (snapshot: ConfigSnapshot) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }
}
