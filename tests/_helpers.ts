/**
 * Shared test fixtures: a fake clock, a config built from a small plans
 * document with known keys, and a real server on 127.0.0.1:0.
 */

import type { Clock } from "../src/limits/clock.ts";
import { hashApiKey } from "../src/plans/api_key.ts";
import type { PlansFile } from "../src/plans/schema.ts";
import { buildSnapshot, ConfigStore } from "../src/plans/snapshot.ts";

/** A clock that moves only when told. */
export class FakeClock implements Clock {
  #nowMs: number;
  constructor(startMs = 1_800_000_000_000) {
    this.#nowMs = startMs;
  }
  nowMs(): number {
    return this.#nowMs;
  }
  advance(ms: number): void {
    this.#nowMs += ms;
  }
  set(ms: number): void {
    this.#nowMs = ms;
  }
}

/** A deterministic test key for `name` (well-formed, 16+ chars). */
export function testKey(name: string): string {
  return `sk_test_${name}_0123456789abcdef`;
}

/**
 * A ConfigStore with the given plans and one account per entry of
 * `accounts` (account id → plan name), each with the key `testKey(id)`.
 */
export function makeConfig(
  plans: PlansFile["plans"],
  accounts: Record<string, string>,
  now = new Date(1_800_000_000_000),
): ConfigStore {
  const document = plansDocument(plans, accounts);
  const built = buildSnapshot(document, now);
  if (!built.ok) throw new Error(`bad test config: ${JSON.stringify(built.errors)}`);
  return new ConfigStore(built.snapshot);
}

/** The plans document `makeConfig` builds. */
export function plansDocument(
  plans: PlansFile["plans"],
  accounts: Record<string, string>,
): PlansFile {
  const written: NonNullable<PlansFile["accounts"]> = {};
  for (const [id, plan] of Object.entries(accounts)) {
    written[id] = {
      plan,
      keys: [{ id: `key_${id}`, hash: hashApiKey(testKey(id)), createdAt: "2026-01-01T00:00:00Z" }],
    };
  }
  return { plans, accounts: written };
}

/** A real HTTP server on 127.0.0.1 with a random port. */
export interface TestServer {
  url: string;
  close(): Promise<void>;
}

/** Serves `handler` on 127.0.0.1:0 until `close()`. */
export function serveOnLoopback(
  handler: (
    request: Request,
    info: Deno.ServeHandlerInfo<Deno.NetAddr>,
  ) => Response | Promise<Response>,
): TestServer {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, handler);
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    close: async () => {
      await server.shutdown();
    },
  };
}

/** mulberry32: a small seedable PRNG, so randomised tests are repeatable from their seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A simulator `sleep` the test can hold: while `holding` is set, each call
 * waits until the test releases it; otherwise it returns at once (0 latency).
 */
export class SleepGate {
  holding = false;
  #held: PromiseWithResolvers<void>[] = [];
  #arrivals = new Set<() => void>();

  sleep = (_ms: number, signal: AbortSignal): Promise<void> => {
    if (!this.holding) return Promise.resolve();
    const deferred = Promise.withResolvers<void>();
    signal.addEventListener("abort", () => deferred.reject(signal.reason), { once: true });
    this.#held.push(deferred);
    for (const arrival of this.#arrivals) arrival();
    return deferred.promise;
  };

  /** Resolves once `count` calls are held; fails after `timeoutMs`. */
  whenHeld(count: number, timeoutMs = 2000): Promise<void> {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const check = () => {
      if (this.#held.length >= count) resolve();
    };
    const timer = setTimeout(
      () => reject(new Error(`${count} calls not held in ${timeoutMs} ms`)),
      timeoutMs,
    );
    this.#arrivals.add(check);
    check();
    return promise.finally(() => {
      clearTimeout(timer);
      this.#arrivals.delete(check);
    });
  }

  /** Lets the oldest held call finish. */
  releaseOne(): void {
    this.#held.shift()?.resolve();
  }

  /** Lets every held call finish. */
  releaseAll(): void {
    for (const deferred of this.#held.splice(0)) deferred.resolve();
  }
}
