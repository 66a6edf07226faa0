/**
 * @module
 * The async task API as domain operations: submit one or a batch, look up,
 * report status, clear the queue, expire old results. Outcomes that are not
 * errors in the program (a duplicate idempotency key, a full queue) come back
 * as values; the HTTP layer turns them into 409 and 429. A submission resolves
 * only once the task is in the journal, so an acknowledged task survives a crash.
 */

import type { Clock } from "../limits/clock.ts";
import type { Account } from "../plans/snapshot.ts";
import type { Dispatcher } from "./dispatcher.ts";
import type { Task, TaskInput } from "./task.ts";
import type { TaskJournal } from "./task_journal.ts";
import type { TaskStore } from "./task_store.ts";

/** Why a single submission was refused. */
export type Refusal =
  | { reason: "duplicate"; existingId: string; idempotencyKey: string }
  | { reason: "queue_full"; limit: number; queued: number }
  | { reason: "webhook"; message: string };

/** The result of one submission. */
export type SubmitResult = { ok: true; task: Task } | ({ ok: false } & Refusal);

/** One item of a batch: a parsed input, or the validation error found at the edge. */
export type BatchItem =
  | { ok: true; input: TaskInput }
  | { ok: false; fields: { path: string; message: string }[] };

/** The result of one batch item, in input order. */
export type BatchItemResult =
  | { index: number; ok: true; task: Task }
  | {
    index: number;
    ok: false;
    refusal: Refusal | { reason: "invalid"; fields: { path: string; message: string }[] };
  };

/** Options for {@linkcode TaskService}. */
export interface TaskServiceOptions {
  store: TaskStore;
  journal: TaskJournal | undefined;
  dispatcher: Dispatcher;
  clock: Clock;
  /** Refuses a webhook URL at submit time (syntax and literal private addresses). */
  checkWebhookUrl?: (url: string) => { ok: true } | { ok: false; reason: string };
}

/** Async task operations for one gateway. */
export class TaskService {
  #o: TaskServiceOptions;

  constructor(options: TaskServiceOptions) {
    this.#o = options;
  }

  /** Queues one task for `account`. */
  async submit(account: Account, input: TaskInput): Promise<SubmitResult> {
    const refusal = this.#refusal(account, input, 1);
    if (refusal !== undefined) return { ok: false, ...refusal };
    const task = this.#create(account, input);
    await this.#persist([task]);
    this.#o.dispatcher.kick(account.id);
    return { ok: true, task };
  }

  /**
   * Queues every valid item of a batch, or none when the valid ones would
   * overflow the queue (then `queue_full` for the whole batch).
   */
  async submitBatch(
    account: Account,
    items: readonly BatchItem[],
  ): Promise<{ ok: true; results: BatchItemResult[] } | ({ ok: false } & Refusal)> {
    const results: BatchItemResult[] = [];
    const accepted: { index: number; input: TaskInput }[] = [];
    const keysInBatch = new Map<string, number>();
    items.forEach((item, index) => {
      if (!item.ok) {
        results.push({ index, ok: false, refusal: { reason: "invalid", fields: item.fields } });
        return;
      }
      const key = item.input.idempotencyKey;
      const earlier = key === undefined ? undefined : keysInBatch.get(key);
      if (key !== undefined && earlier !== undefined) {
        const message = `idempotencyKey "${key}" repeats item ${earlier} of this batch`;
        results.push({
          index,
          ok: false,
          refusal: { reason: "invalid", fields: [{ path: `${index}.idempotencyKey`, message }] },
        });
        return;
      }
      const refusal = this.#refusal(account, item.input, 0);
      if (refusal !== undefined) {
        results.push({ index, ok: false, refusal });
        return;
      }
      if (key !== undefined) keysInBatch.set(key, index);
      accepted.push({ index, input: item.input });
    });
    const queued = this.#o.store.queuedCount(account.id);
    if (queued + accepted.length > account.plan.queueLimit) {
      return { ok: false, reason: "queue_full", limit: account.plan.queueLimit, queued };
    }
    const tasks = accepted.map(({ index, input }) => {
      const task = this.#create(account, input);
      results.push({ index, ok: true, task });
      return task;
    });
    await this.#persist(tasks);
    if (tasks.length > 0) this.#o.dispatcher.kick(account.id);
    results.sort((a, b) => a.index - b.index);
    return { ok: true, results };
  }

  /** `account`'s task `id`, if it exists. */
  get(account: Account, id: string): Task | undefined {
    const task = this.#o.store.get(id);
    return task?.accountId === account.id ? task : undefined;
  }

  /** Queue figures of `account` for `GET /v1/async/status`. */
  status(account: Account): {
    queuedTasks: number;
    processingTasks: number;
    priorityBreakdown: { priority: number; count: number }[];
  } {
    const { store } = this.#o;
    return {
      queuedTasks: store.queuedCount(account.id),
      processingTasks: store.processingCount(account.id),
      priorityBreakdown: store.priorityBreakdown(account.id),
    };
  }

  /** Deletes `account`'s QUEUED tasks; PROCESSING ones are untouched. */
  async clearQueue(account: Account): Promise<number> {
    const cleared = this.#o.store.clearQueued(account.id);
    await Promise.all(cleared.map((task) => this.#o.journal?.delete(task.id)));
    return cleared.length;
  }

  /** Deletes finished tasks older than `ttlMs`. */
  async expire(ttlMs: number): Promise<number> {
    const expired = this.#o.store.expire(this.#o.clock.nowMs(), ttlMs);
    await Promise.all(expired.map((task) => this.#o.journal?.delete(task.id)));
    return expired.length;
  }

  #refusal(account: Account, input: TaskInput, adding: number): Refusal | undefined {
    const { store, checkWebhookUrl } = this.#o;
    if (input.idempotencyKey !== undefined) {
      const existing = store.findByIdempotencyKey(account.id, input.idempotencyKey);
      if (existing !== undefined) {
        return {
          reason: "duplicate",
          existingId: existing.id,
          idempotencyKey: input.idempotencyKey,
        };
      }
    }
    if (input.webhook !== undefined && checkWebhookUrl !== undefined) {
      const verdict = checkWebhookUrl(input.webhook.url);
      if (!verdict.ok) return { reason: "webhook", message: verdict.reason };
    }
    const queued = store.queuedCount(account.id);
    if (adding > 0 && queued + adding > account.plan.queueLimit) {
      return { reason: "queue_full", limit: account.plan.queueLimit, queued };
    }
    return undefined;
  }

  #create(account: Account, input: TaskInput): Task {
    const { store, clock } = this.#o;
    const task: Task = {
      id: crypto.randomUUID(),
      accountId: account.id,
      taskType: input.taskType,
      payload: input.payload,
      priority: input.priority,
      idempotencyKey: input.idempotencyKey ?? null,
      status: "QUEUED",
      createdAt: new Date(clock.nowMs()).toISOString(),
      startedAt: null,
      finishedAt: null,
      latencyMs: null,
      attempts: 0,
      result: null,
      error: null,
      webhook: input.webhook === undefined
        ? null
        : { url: input.webhook.url, delivered: false, deliveredAt: null, attempts: 0 },
      seq: store.nextSeq(),
    };
    store.add(task);
    return task;
  }

  async #persist(tasks: readonly Task[]): Promise<void> {
    // Journal the QUEUED state before the dispatcher may change it.
    await this.#o.journal?.putAll(tasks);
  }
}
