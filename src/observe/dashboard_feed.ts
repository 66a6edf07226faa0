/**
 * @module
 * The dashboard's live state and its Server-Sent Events. One shared interval
 * (started by the first client, stopped when the last one leaves) builds the
 * state once per tick from the live sources — config, slots, last-minute
 * traffic, queue depth, the last reload — and sends the same encoded event to
 * every client. The request log's written batches are kept in a bounded
 * buffer; each tick sends the records that arrived since the previous tick,
 * and a new client first gets the most recent ones, so its tail is not empty.
 * A client that falls far behind is closed (its `EventSource` reconnects)
 * rather than buffered without bound.
 */

import type { Clock } from "../limits/clock.ts";
import type { ConfigStore } from "../plans/snapshot.ts";
import type { FieldError } from "../plans/schema.ts";
import type { RequestRecord } from "./request_log.ts";
import type { TrafficView } from "./traffic_stats.ts";

/** One account's row on the dashboard. */
export interface AccountState {
  id: string;
  plan: string;
  slotsUsed: number;
  slotsLimit: number;
  requestsPerSecond: number;
  /** Requests per second over the last minute, oldest first (60 values). */
  sparkline: number[];
  rejectedLastMinute: { rate: number; concurrency: number };
  queueDepth: number;
}

/** What one event carries. */
export interface DashboardState {
  time: string;
  accounts: AccountState[];
  /** Plan names, in file order, for the plan selectors. */
  plans: string[];
  reload: { ok: boolean; at: string; source: string; errors: readonly FieldError[] };
  /** Request records written since the previous event (the newest, at most the cap). */
  logTail: RequestRecord[];
  /** Records written since the previous event that did not fit under the cap. */
  logTailOmitted: number;
}

/** Runs `tick` every `intervalMs` until `signal` aborts. */
export type Interval = (tick: () => void, intervalMs: number, signal: AbortSignal) => void;

/** Options for {@linkcode DashboardFeed}. */
export interface DashboardFeedOptions {
  config: Pick<ConfigStore, "current" | "lastReload">;
  limiter: { slotsInUse(accountId: string): number };
  stats: { view(accountId: string, nowMs: number): TrafficView };
  clock: Clock;
  /** QUEUED async tasks of an account (0 for all when absent). */
  queueDepth?: (accountId: string) => number;
  /** Source of the live log tail (no tail when absent). */
  log?: { subscribe(listener: (batch: readonly RequestRecord[]) => void): () => void };
  /** Time between events. */
  intervalMs?: number;
  /** Log records sent per event at most. */
  tailMax?: number;
  /** Events a client may have unread before it is closed as too slow. */
  clientQueueMax?: number;
  /** Runs the shared interval (`setInterval` unless a test drives it). */
  interval?: Interval;
}

function realInterval(tick: () => void, intervalMs: number, signal: AbortSignal): void {
  const id = setInterval(tick, intervalMs);
  signal.addEventListener("abort", () => clearInterval(id), { once: true });
}

const encoder = new TextEncoder();

/** Builds the dashboard's state every second and streams it to SSE clients. */
export class DashboardFeed {
  #options: Required<Omit<DashboardFeedOptions, "queueDepth" | "log">>;
  #queueDepth: (accountId: string) => number;
  #clients = new Set<ReadableStreamDefaultController<Uint8Array>>();
  #timer: AbortController | undefined;
  #unsubscribe: () => void;
  #recent: RequestRecord[] = [];
  #seen = 0;
  #sent = 0;
  #closed = false;

  constructor(options: DashboardFeedOptions) {
    const {
      queueDepth = () => 0,
      log,
      intervalMs = 1000,
      tailMax = 200,
      clientQueueMax = 30,
      interval = realInterval,
      ...sources
    } = options;
    this.#options = { ...sources, intervalMs, tailMax, clientQueueMax, interval };
    this.#queueDepth = queueDepth;
    this.#unsubscribe = log?.subscribe((batch) => this.#remember(batch)) ?? (() => {});
  }

  /** Connected SSE clients. */
  get clients(): number {
    return this.#clients.size;
  }

  /** Whether the shared interval is running. */
  get ticking(): boolean {
    return this.#timer !== undefined;
  }

  /** The state as of now; `logTail` holds the given records. */
  state(logTail: RequestRecord[] = [], logTailOmitted = 0): DashboardState {
    const { config, limiter, stats, clock } = this.#options;
    const nowMs = clock.nowMs();
    const snapshot = config.current;
    const accounts = [...snapshot.accounts.values()].map((account) => {
      const traffic = stats.view(account.id, nowMs);
      return {
        id: account.id,
        plan: account.plan.name,
        slotsUsed: limiter.slotsInUse(account.id),
        slotsLimit: account.plan.concurrency,
        requestsPerSecond: traffic.requestsPerSecond,
        sparkline: traffic.sparkline,
        rejectedLastMinute: traffic.rejectedLastMinute,
        queueDepth: this.#queueDepth(account.id),
      };
    });
    const last = config.lastReload;
    return {
      time: new Date(nowMs).toISOString(),
      accounts,
      plans: [...snapshot.plans.keys()],
      reload: { ok: last.ok, at: last.at.toISOString(), source: last.source, errors: last.errors },
      logTail,
      logTailOmitted,
    };
  }

  /**
   * A new client's event stream: at once the current state with the recent
   * log records other clients were already sent, then one event per tick
   * until it is cancelled.
   */
  stream(): ReadableStream<Uint8Array> {
    let self: ReadableStreamDefaultController<Uint8Array> | undefined;
    return new ReadableStream<Uint8Array>({
      start: (controller) => {
        if (this.#closed) {
          controller.close();
          return;
        }
        self = controller;
        this.#clients.add(controller);
        this.#startTimer();
        // Records not yet broadcast come with the next tick, as for everyone.
        const unsent = this.#seen - this.#sent;
        const backlog = this.#recent.slice(0, Math.max(0, this.#recent.length - unsent));
        controller.enqueue(encodeEvent(this.state(backlog), "retry: 2000\n"));
      },
      cancel: () => {
        if (self !== undefined) this.#remove(self);
      },
    }, new CountQueuingStrategy({ highWaterMark: this.#options.clientQueueMax }));
  }

  /** Sends one event to every client now (what each tick of the interval does). */
  tick(): void {
    const fresh = this.#seen - this.#sent;
    const tail = fresh === 0 ? [] : this.#recent.slice(-fresh);
    this.#sent = this.#seen;
    const event = encodeEvent(this.state(tail, fresh - tail.length));
    for (const client of this.#clients) {
      if ((client.desiredSize ?? 1) <= 0) {
        // Too far behind: end it rather than queue without bound.
        this.#remove(client);
        client.close();
      } else {
        client.enqueue(event);
      }
    }
  }

  /** Ends every stream, stops the interval and leaves the log. */
  close(): void {
    this.#closed = true;
    this.#unsubscribe();
    for (const client of [...this.#clients]) {
      this.#remove(client);
      client.close();
    }
  }

  #remember(batch: readonly RequestRecord[]): void {
    const { tailMax } = this.#options;
    this.#seen += batch.length;
    const kept = batch.length >= tailMax ? batch.slice(-tailMax) : batch;
    this.#recent.push(...kept);
    if (this.#recent.length > tailMax) this.#recent.splice(0, this.#recent.length - tailMax);
  }

  #startTimer(): void {
    if (this.#timer !== undefined) return;
    // Records written while nobody watched are not "new" to the first tick.
    this.#sent = this.#seen;
    this.#timer = new AbortController();
    this.#options.interval(() => this.tick(), this.#options.intervalMs, this.#timer.signal);
  }

  #remove(client: ReadableStreamDefaultController<Uint8Array>): void {
    this.#clients.delete(client);
    if (this.#clients.size === 0) {
      this.#timer?.abort();
      this.#timer = undefined;
    }
  }
}

function encodeEvent(state: DashboardState, prefix = ""): Uint8Array {
  return encoder.encode(`${prefix}data: ${JSON.stringify(state)}\n\n`);
}
