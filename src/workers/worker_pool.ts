/**
 * @module
 * The main isolate's side of the data-plane workers: it starts them on the
 * shared port with the limiter's shared tables, assigns every bucket of each
 * config to a table entry and sends config + assignment to all of them,
 * waiting for every acknowledgement (so an admin write returns only once every
 * isolate admits under the new plan), and takes their log records, freed-slot
 * notices and lease counts back in batches.
 */

import type { Clock } from "../limits/clock.ts";
import { bucketKeysOf } from "../limits/bucket_keys.ts";
import type { Limiter } from "../limits/limiter.ts";
import type { RequestRecord } from "../observe/request_log.ts";
import type { ConfigSnapshot, ConfigStore } from "../plans/snapshot.ts";
import type { ConfigMessage, FromWorker, ToWorker, WorkerSettings } from "./protocol.ts";

/** Options for {@linkcode WorkerPool}. */
export interface WorkerPoolOptions {
  /** Worker isolates to start (the main isolate serves too). */
  count: number;
  /** The module each worker runs (`main.ts` itself, so the bundle and binary work). */
  moduleUrl: string;
  settings: WorkerSettings;
  limiter: Limiter;
  config: ConfigStore;
  clock: Clock;
  providers: ReadonlySet<string>;
  /** Records from workers, with their metric flags. */
  onRecords: (batch: [RequestRecord, number][], dropped: number, index: number) => void;
  /** Accounts whose slots a worker freed (to start queued tasks). */
  onReleased: (accounts: readonly string[]) => void;
  onError?: (message: string) => void;
  /** How long to wait for a worker's acknowledgement. */
  ackTimeoutMs?: number;
}

interface Member {
  worker: Worker;
  listening: PromiseWithResolvers<void>;
  drained: PromiseWithResolvers<void>;
  acked: number;
  waiters: { seq: number; resolve: () => void }[];
  reclaimed: number;
}

/** The data-plane workers of this process. */
export class WorkerPool {
  #o: WorkerPoolOptions;
  #members: Member[] = [];
  #seq = 0;
  #assignedKeys = new Set<string>();
  #queueDepths: SharedArrayBuffer;
  #unsubscribe: (() => void) | undefined;

  constructor(options: WorkerPoolOptions) {
    this.#o = options;
    this.#queueDepths = new SharedArrayBuffer(options.limiter.semaphores.capacity * 4);
  }

  /** Bucket keys the current assignment uses (never reclaimed while assigned). */
  get assignedKeys(): ReadonlySet<string> {
    return this.#assignedKeys;
  }

  /** Slots reclaimed at their deadline in the workers. */
  get reclaimed(): number {
    return this.#members.reduce((sum, m) => sum + m.reclaimed, 0);
  }

  /** Starts every worker and resolves once all listen on the shared port. */
  async start(): Promise<void> {
    const { count, moduleUrl, settings, limiter } = this.#o;
    const config = this.#configMessage(this.#o.config.current);
    for (let index = 0; index < count; index++) {
      const worker = new Worker(moduleUrl, { type: "module", name: `sluice-data-plane-${index}` });
      const member: Member = {
        worker,
        listening: Promise.withResolvers(),
        drained: Promise.withResolvers(),
        acked: config.seq,
        waiters: [],
        reclaimed: 0,
      };
      worker.onmessage = (event: MessageEvent<FromWorker>) => this.#receive(member, event.data);
      worker.onerror = (event) => {
        event.preventDefault();
        this.#o.onError?.(`worker ${index}: ${event.message}`);
        member.listening.reject(new Error(event.message));
      };
      this.#members.push(member);
      const init: ToWorker = {
        type: "init",
        index,
        settings,
        tables: limiter.sharedTables(),
        queueDepths: this.#queueDepths,
        config,
      };
      worker.postMessage(init);
    }
    this.#unsubscribe = this.#o.config.addPropagator((snapshot) => this.#broadcast(snapshot));
    await Promise.all(this.#members.map((m) => m.listening.promise));
  }

  /** Writes each account's queue depth where workers read it (for `GET /v1/limits`). */
  publishQueueDepths(queueDepth: (accountId: string) => number): void {
    const depths = new Int32Array(this.#queueDepths);
    for (const account of this.#o.config.current.accounts.values()) {
      const index = this.#o.limiter.semaphoreIndex(account.id, account.plan.concurrency);
      Atomics.store(depths, index, queueDepth(account.id));
    }
  }

  /** Asks every worker to stop taking requests and waits (bounded) for them to finish. */
  async drain(timeoutMs: number): Promise<void> {
    this.#unsubscribe?.();
    for (const member of this.#members) {
      member.worker.postMessage({ type: "drain" } satisfies ToWorker);
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<void>((resolve) => timer = setTimeout(resolve, timeoutMs));
    await Promise.race([Promise.all(this.#members.map((m) => m.drained.promise)), deadline]);
    clearTimeout(timer);
    for (const member of this.#members) member.worker.terminate();
  }

  #configMessage(snapshot: ConfigSnapshot): ConfigMessage {
    const { limiter, clock, providers } = this.#o;
    const buckets = bucketKeysOf(snapshot, providers);
    const accounts: [string, number][] = [...snapshot.accounts.values()].map((a) => [
      a.id,
      a.plan.concurrency,
    ]);
    const assignment = limiter.assign(buckets, accounts, clock.nowMs());
    this.#assignedKeys = new Set(buckets.map(([key]) => key));
    return { seq: ++this.#seq, document: snapshot.document, assignment };
  }

  async #broadcast(snapshot: ConfigSnapshot): Promise<void> {
    const message = this.#configMessage(snapshot);
    const timeoutMs = this.#o.ackTimeoutMs ?? 5000;
    await Promise.all(this.#members.map((member) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.#o.onError?.(
            `a worker did not acknowledge config ${message.seq} in ${timeoutMs} ms`,
          );
          resolve();
        }, timeoutMs);
        member.waiters.push({
          seq: message.seq,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
        member.worker.postMessage({ type: "config", ...message } satisfies ToWorker);
      })
    ));
  }

  #receive(member: Member, message: FromWorker): void {
    switch (message.type) {
      case "listening":
        member.listening.resolve();
        break;
      case "ack":
        member.acked = Math.max(member.acked, message.seq);
        member.waiters = member.waiters.filter((w) => {
          if (w.seq > member.acked) return true;
          w.resolve();
          return false;
        });
        break;
      case "records":
        this.#o.onRecords(message.batch, message.dropped, message.index);
        break;
      case "released":
        this.#o.onReleased(message.accounts);
        break;
      case "stats":
        member.reclaimed = message.reclaimed;
        break;
      case "drained":
        member.drained.resolve();
        break;
      case "error":
        this.#o.onError?.(`worker ${message.index}: ${message.message}`);
        break;
    }
  }
}
