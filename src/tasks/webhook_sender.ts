/**
 * @module
 * Delivers finished tasks to their webhook URLs (SPEC §5). `enqueue()` returns
 * at once; an internal queue runs at most `concurrency` attempts at a time and
 * starts the next one when an attempt settles, so nothing polls.
 *
 * One attempt: check the URL against the SSRF rules (after DNS, since answers
 * change), then POST the body with Standard Webhooks headers: a `webhook-id`
 * fixed per task, so receivers can drop duplicates, and a fresh timestamp and
 * signature. Redirects are not followed (a public URL could point inside).
 * Any 2xx acknowledges. A non-2xx, timeout, connection or DNS error waits
 * `retryDelaysMs[attempt - 1]` (± jitter) on a timer and tries again; after
 * the last attempt the delivery has failed. An SSRF refusal fails at once.
 * Each change is reported through `onUpdate`, the sender's only output.
 */

import type { Clock } from "../limits/clock.ts";
import { checkWebhookUrl, type HostResolver } from "./ssrf_guard.ts";
import type { WebhookState } from "./task.ts";
import { webhookHeaders } from "./webhook_signature.ts";

/** ~2, 4, 8, 16 minutes between the five attempts. */
const DEFAULT_RETRY_DELAYS_MS: readonly number[] = [120_000, 240_000, 480_000, 960_000];

/** One finished task to deliver. */
export interface WebhookDelivery {
  taskId: string;
  url: string;
  /** The account's `whsec_…` secret; without one the request goes out unsigned. */
  secret: string | undefined;
  /** The JSON body, sent exactly as signed. */
  body: string;
  /** Attempts already made (a delivery resumed after a restart); default 0. */
  attempts?: number;
}

/** Options for {@linkcode WebhookSender}. */
export interface WebhookSenderOptions {
  /** Source of `webhook-timestamp`, `deliveredAt` and `nextAttemptAt`. */
  clock: Clock;
  /** Wait after each failed attempt; attempts = length + 1. Default ~2, 4, 8, 16 min. */
  retryDelaysMs?: readonly number[];
  /** Each wait varies by up to this fraction either way; default 0.1. */
  jitter?: number;
  /** Uniform in [0, 1); default `Math.random`. */
  random?: () => number;
  /** Bound on one attempt, DNS included; default 10 s. */
  timeoutMs?: number;
  /** Attempts in flight at once; default 8. */
  concurrency?: number;
  /** Allow private, loopback and link-local targets (`--allow-private-webhooks`); default false. */
  allowPrivate?: boolean;
  /** Hostname lookup for the SSRF check; default DNS A and AAAA. */
  resolve?: HostResolver | undefined;
  /** Called after every attempt with the delivery's new state; must not throw. */
  onUpdate: (taskId: string, state: WebhookState) => void;
}

interface Job {
  taskId: string;
  messageId: string;
  url: string;
  secret: string | undefined;
  body: string;
  /** Attempts made so far. */
  attempts: number;
}

interface Retry {
  job: Job;
  delayMs: number;
}

type Outcome =
  | { kind: "delivered" }
  | { kind: "retryable"; error: string }
  | { kind: "final"; error: string };

/** Sends signed webhooks with bounded concurrency and timed retries. */
export class WebhookSender {
  #clock: Clock;
  #retryDelaysMs: readonly number[];
  #jitter: number;
  #random: () => number;
  #timeoutMs: number;
  #concurrency: number;
  #allowPrivate: boolean;
  #resolve: HostResolver | undefined;
  #onUpdate: (taskId: string, state: WebhookState) => void;

  #ready: Job[] = [];
  #inFlight = new Set<Promise<void>>();
  #retryTimers = new Set<ReturnType<typeof setTimeout>>();
  #stopping = new AbortController();
  #idleWaiters: (() => void)[] = [];

  constructor(options: WebhookSenderOptions) {
    const {
      retryDelaysMs = DEFAULT_RETRY_DELAYS_MS,
      jitter = 0.1,
      random = Math.random,
      timeoutMs = 10_000,
      concurrency = 8,
      allowPrivate = false,
    } = options;
    if (!retryDelaysMs.every((delayMs) => Number.isFinite(delayMs) && delayMs >= 0)) {
      throw new RangeError("retryDelaysMs must be finite and not negative");
    }
    if (!(jitter >= 0 && jitter <= 1)) throw new RangeError("jitter must be within [0, 1]");
    if (!(timeoutMs > 0)) throw new RangeError("timeoutMs must be positive");
    if (!(Number.isInteger(concurrency) && concurrency >= 1)) {
      throw new RangeError("concurrency must be a positive integer");
    }
    this.#clock = options.clock;
    this.#retryDelaysMs = [...retryDelaysMs];
    this.#jitter = jitter;
    this.#random = random;
    this.#timeoutMs = timeoutMs;
    this.#concurrency = concurrency;
    this.#allowPrivate = allowPrivate;
    this.#resolve = options.resolve;
    this.#onUpdate = options.onUpdate;
  }

  /** Deliveries queued, in flight or waiting for a retry. */
  get pendingCount(): number {
    return this.#ready.length + this.#inFlight.size + this.#retryTimers.size;
  }

  /** Queues a delivery and returns at once; ignored after `stop()`. */
  enqueue(delivery: WebhookDelivery): void {
    if (this.#stopping.signal.aborted) return;
    this.#ready.push({
      taskId: delivery.taskId,
      messageId: `msg_${delivery.taskId}`,
      url: delivery.url,
      secret: delivery.secret,
      body: delivery.body,
      attempts: delivery.attempts ?? 0,
    });
    this.#pump();
  }

  /** Resolves once nothing is queued, in flight or waiting for a retry. */
  idle(): Promise<void> {
    if (this.pendingCount === 0) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#idleWaiters.push(resolve);
    return promise;
  }

  /**
   * Drops queued deliveries and retry timers, aborts attempts in flight
   * (they report nothing), and resolves when those have settled.
   */
  async stop(): Promise<void> {
    this.#stopping.abort();
    for (const timer of this.#retryTimers) clearTimeout(timer);
    this.#retryTimers.clear();
    this.#ready.length = 0;
    await Promise.allSettled(this.#inFlight);
    this.#wakeIdleWaiters();
  }

  get #maxAttempts(): number {
    return this.#retryDelaysMs.length + 1;
  }

  #pump(): void {
    while (this.#inFlight.size < this.#concurrency) {
      const job = this.#ready.shift();
      if (job === undefined) break;
      const run: Promise<void> = this.#run(job).then(
        (retry) => this.#settled(run, retry),
        (error: unknown) => {
          this.#settled(run, undefined);
          throw error;
        },
      );
      this.#inFlight.add(run);
    }
  }

  /** An attempt is over: arm its retry (after leaving the in-flight set), start the next. */
  #settled(run: Promise<void>, retry: Retry | undefined): void {
    this.#inFlight.delete(run);
    if (retry !== undefined && !this.#stopping.signal.aborted) {
      const timer = setTimeout(() => {
        this.#retryTimers.delete(timer);
        this.#ready.push(retry.job);
        this.#pump();
      }, retry.delayMs);
      this.#retryTimers.add(timer);
    }
    this.#pump();
    this.#wakeIdleWaiters();
  }

  #wakeIdleWaiters(): void {
    if (this.pendingCount !== 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Makes one attempt and reports it; returns the retry to arm, if any. */
  async #run(job: Job): Promise<Retry | undefined> {
    const stopSignal = this.#stopping.signal;
    if (job.attempts >= this.#maxAttempts) {
      this.#report(job, { attempts: job.attempts, lastError: "no attempts left", failed: true });
      return;
    }
    const outcome = await this.#attempt(job);
    const attempts = job.attempts + 1;
    if (outcome.kind === "delivered") {
      const deliveredAt = new Date(this.#clock.nowMs()).toISOString();
      this.#onUpdate(job.taskId, { url: job.url, delivered: true, deliveredAt, attempts });
      return;
    }
    if (stopSignal.aborted) return;
    if (outcome.kind === "final") {
      // Nothing was sent, so the refusal is not counted as an attempt.
      this.#report(job, { attempts: job.attempts, lastError: outcome.error, failed: true });
      return;
    }
    if (attempts >= this.#maxAttempts) {
      this.#report(job, { attempts, lastError: outcome.error, failed: true });
      return;
    }
    const delayMs = this.#retryDelayMs(attempts);
    const nextAttemptAt = new Date(this.#clock.nowMs() + delayMs).toISOString();
    this.#report(job, { attempts, lastError: outcome.error, nextAttemptAt });
    return { job: { ...job, attempts }, delayMs };
  }

  async #attempt(job: Job): Promise<Outcome> {
    const stopSignal = this.#stopping.signal;
    const signal = AbortSignal.any([stopSignal, AbortSignal.timeout(this.#timeoutMs)]);
    try {
      const check = await checkWebhookUrl(job.url, {
        allowPrivate: this.#allowPrivate,
        resolve: this.#resolve,
        signal,
      });
      if (!check.ok) return { kind: "final", error: `refused: ${check.reason}` };
      let headers: Record<string, string>;
      try {
        headers = await webhookHeaders(job.secret, {
          id: job.messageId,
          timestampSeconds: Math.floor(this.#clock.nowMs() / 1000),
          body: job.body,
        });
      } catch (error) {
        return { kind: "final", error: `cannot sign: ${describe(error)}` };
      }
      const response = await fetch(job.url, {
        method: "POST",
        headers,
        body: job.body,
        redirect: "manual",
        signal,
      });
      await discardBody(response);
      if (response.status >= 200 && response.status < 300) return { kind: "delivered" };
      return { kind: "retryable", error: `HTTP ${response.status}` };
    } catch (error) {
      if (!stopSignal.aborted && isTimeout(error)) {
        return { kind: "retryable", error: `timed out after ${this.#timeoutMs} ms` };
      }
      return { kind: "retryable", error: describe(error) };
    }
  }

  #retryDelayMs(attemptsMade: number): number {
    const baseMs = this.#retryDelaysMs[attemptsMade - 1] ?? 0;
    const spread = this.#jitter * (2 * this.#random() - 1);
    return Math.max(0, Math.round(baseMs * (1 + spread)));
  }

  #report(
    job: Job,
    state: Pick<WebhookState, "attempts" | "lastError" | "nextAttemptAt" | "failed">,
  ): void {
    this.#onUpdate(job.taskId, { url: job.url, delivered: false, deliveredAt: null, ...state });
  }
}

/** Releases the connection whatever the status; the body itself is never read. */
async function discardBody(response: Response): Promise<void> {
  try {
    await response.body?.cancel();
  } catch {
    // The stream may already be closed; either way it no longer holds the connection.
  }
}

function isTimeout(error: unknown): boolean {
  return error instanceof DOMException && error.name === "TimeoutError";
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
