/**
 * @module
 * Runs queued tasks inside the account's plan slots: the very semaphore sync
 * monitor calls use, so sync and async together never exceed the plan. It is
 * driven by events, never by a polling timer: a submission, a released slot
 * (any lease, sync or async) and a config swap each start whatever can start
 * now. Within an account the store hands out the highest priority first,
 * FIFO within a priority; across accounts each one draws only on its own
 * slots, so a backlog in one never delays another.
 *
 * A task runs through the same forwarder as sync calls. Upstream 5xx and
 * timeouts are retried with backoff while the task keeps its slot; a 4xx
 * fails it at once. The finished task is journaled and, if it has a webhook,
 * handed to the webhook queue, which never holds up dispatch.
 */

import { HttpError } from "../http/errors.ts";
import type { Clock } from "../limits/clock.ts";
import type { Lease } from "../limits/lease.ts";
import type { Limiter } from "../limits/limiter.ts";
import type { ConfigStore } from "../plans/snapshot.ts";
import type { Forwarder } from "../upstream/forwarder.ts";
import { Deadline } from "../upstream/deadline.ts";
import { abortableSleep } from "../upstream/simulator.ts";
import { type Task, taskView } from "./task.ts";
import type { TaskJournal } from "./task_journal.ts";
import type { TaskStore } from "./task_store.ts";

/** Where finished tasks with a webhook go (see `webhook_sender.ts`). */
export interface WebhookQueue {
  enqueue(
    delivery: { taskId: string; url: string; secret: string | undefined; body: string },
  ): void;
}

/** Options for {@linkcode Dispatcher}. */
export interface DispatcherOptions {
  store: TaskStore;
  journal: TaskJournal | undefined;
  limiter: Limiter;
  config: ConfigStore;
  forwarder: Forwarder;
  clock: Clock;
  webhooks?: WebhookQueue | undefined;
  /** Task type → monitor path. */
  taskPaths: Readonly<Record<string, string>>;
  /** Attempts per task, the first included. */
  maxAttempts?: number;
  /** Waits between attempts (the last entry repeats). */
  retryDelaysMs?: readonly number[];
  /** Bound on one attempt. */
  attemptTimeoutMs?: number;
  /** Called with unexpected errors (journal I/O), for logging. */
  onError?: (error: unknown) => void;
}

/** Starts queued tasks when slots are free and sees them through. */
export class Dispatcher {
  #o: Required<Omit<DispatcherOptions, "journal" | "webhooks">> & {
    journal: TaskJournal | undefined;
    webhooks: WebhookQueue | undefined;
  };
  #running = new Map<Task, AbortController>();
  #stopped = false;
  #idleWaiters: (() => void)[] = [];
  #unsubscribe: (() => void)[] = [];

  constructor(options: DispatcherOptions) {
    this.#o = {
      maxAttempts: 5,
      retryDelaysMs: [1000, 2000, 4000, 8000],
      attemptTimeoutMs: 300_000,
      onError: () => {},
      webhooks: undefined,
      ...options,
    };
    const { limiter, config } = this.#o;
    this.#unsubscribe.push(
      limiter.leases.onRelease((lease) => queueMicrotask(() => this.kick(lease.owner))),
      config.subscribe(() => queueMicrotask(() => this.kickAll())),
    );
  }

  /** Tasks running now. */
  get runningCount(): number {
    return this.#running.size;
  }

  /** Starts as many of `accountId`'s queued tasks as it has free slots. */
  kick(accountId: string): void {
    if (this.#stopped) return;
    const { store, config, limiter, clock } = this.#o;
    const account = config.current.accounts.get(accountId);
    if (account === undefined) return;
    while (store.queuedCount(accountId) > 0) {
      const index = limiter.semaphoreIndex(accountId, account.plan.concurrency);
      const nowMs = clock.nowMs();
      const lease = limiter.leases.tryAcquire(index, nowMs, accountId);
      if (lease === undefined) return;
      const task = store.start(accountId, new Date(nowMs));
      if (task === undefined) {
        lease.release("done");
        return;
      }
      this.#run(task, lease);
    }
  }

  /** Kicks every account with queued work (after a config change or restart). */
  kickAll(): void {
    for (const accountId of [...this.#o.store.accountsWithQueued()]) this.kick(accountId);
  }

  /** Resolves when no task is running. */
  idle(): Promise<void> {
    if (this.#running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Stops starting tasks; waits up to `graceMs` for running ones, then aborts
   * them (they were never journaled as finished, so a restart queues them again).
   */
  async stop(graceMs = 0): Promise<void> {
    this.#stopped = true;
    for (const off of this.#unsubscribe) off();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => timer = setTimeout(resolve, graceMs));
    await Promise.race([this.idle(), grace]);
    clearTimeout(timer);
    for (const controller of this.#running.values()) controller.abort(new Error("shutting down"));
    await this.idle();
  }

  #run(task: Task, lease: Lease): void {
    const controller = new AbortController();
    this.#running.set(task, controller);
    this.#execute(task, lease, controller.signal)
      .catch((error) => this.#o.onError(error))
      .finally(() => {
        lease.release(controller.signal.aborted ? "aborted" : "done");
        this.#running.delete(task);
        if (this.#running.size === 0) {
          for (const resolve of this.#idleWaiters.splice(0)) resolve();
        }
      });
  }

  async #execute(task: Task, lease: Lease, signal: AbortSignal): Promise<void> {
    const { maxAttempts, retryDelaysMs, clock, store, limiter } = this.#o;
    let lastError = { code: "UPSTREAM_ERROR", message: "no attempt made" };
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      task.attempts = attempt;
      lease.renew(clock.nowMs() + limiter.leases.leaseMs);
      const outcome = await this.#attempt(task, signal);
      if (signal.aborted) return; // shutting down: left for the restart to queue again
      if (outcome.kind === "done") {
        store.finish(
          task,
          { status: "COMPLETED", result: outcome.result, error: null },
          new Date(clock.nowMs()),
        );
        return this.#finished(task);
      }
      lastError = outcome.error;
      if (outcome.kind === "fatal" || attempt === maxAttempts) break;
      const delayMs = retryDelaysMs[Math.min(attempt - 1, retryDelaysMs.length - 1)] ?? 1000;
      try {
        await abortableSleep(delayMs, signal);
      } catch {
        return;
      }
    }
    store.finish(
      task,
      { status: "FAILED", result: null, error: lastError },
      new Date(clock.nowMs()),
    );
    return this.#finished(task);
  }

  async #finished(task: Task): Promise<void> {
    const { journal, webhooks, config } = this.#o;
    if (task.webhook !== null && webhooks !== undefined) {
      webhooks.enqueue({
        taskId: task.id,
        url: task.webhook.url,
        secret: config.current.accounts.get(task.accountId)?.webhookSecret,
        body: JSON.stringify(taskView(task)),
      });
    }
    await journal?.put(task);
  }

  async #attempt(task: Task, signal: AbortSignal): Promise<AttemptOutcome> {
    const { forwarder, config, taskPaths, attemptTimeoutMs } = this.#o;
    const path = taskPaths[task.taskType] ?? `/v1/monitor/${task.taskType.toLowerCase()}`;
    // One timer per attempt, cleared when it ends (see `deadline.ts`).
    const deadline = new Deadline(attemptTimeoutMs, signal);
    const attemptSignal = deadline.signal;
    const request = new Request(`http://sluice.internal${path}`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": task.id },
      body: JSON.stringify(task.payload),
      signal: attemptSignal,
    });
    try {
      const response = await forwarder.forward(request, {
        accountId: task.accountId,
        planName: config.current.accounts.get(task.accountId)?.plan.name ?? "",
        requestId: task.id,
        clientAddress: undefined,
        signal: attemptSignal,
      });
      const text = await response.text();
      if (response.ok) return { kind: "done", result: parseMaybeJson(text) };
      const error = { code: "UPSTREAM_ERROR", message: `upstream answered ${response.status}` };
      return { kind: response.status >= 500 ? "retry" : "fatal", error };
    } catch (error) {
      if (error instanceof HttpError) {
        const failure = { code: error.code, message: error.message };
        return { kind: error.status >= 500 ? "retry" : "fatal", error: failure };
      }
      if (deadline.timedOut) {
        return {
          kind: "retry",
          error: { code: "UPSTREAM_TIMEOUT", message: "upstream timed out" },
        };
      }
      const message = error instanceof Error ? error.message : String(error);
      return { kind: "retry", error: { code: "UPSTREAM_ERROR", message } };
    } finally {
      deadline.end();
    }
  }
}

type AttemptOutcome =
  | { kind: "done"; result: unknown }
  | { kind: "retry" | "fatal"; error: { code: string; message: string } };

function parseMaybeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
