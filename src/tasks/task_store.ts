/**
 * @module
 * The in-memory task store: every task by id, and per account ten FIFO
 * queues (one per priority) of QUEUED tasks, so taking the next task is
 * "highest non-empty priority, oldest first" in O(1). It also keeps the
 * idempotency index and the order in which finished tasks expire. Pure state:
 * times come in as arguments; persistence is the journal's job.
 */

import type { Task } from "./task.ts";

const PRIORITIES = 10;

/** A FIFO of tasks with O(1) push and shift. */
class Fifo {
  #items: (Task | undefined)[] = [];
  #head = 0;

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(task: Task): void {
    this.#items.push(task);
  }

  peek(): Task | undefined {
    return this.#items[this.#head];
  }

  shift(): Task | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const task = this.#items[this.#head];
    this.#items[this.#head++] = undefined;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return task;
  }

  drain(): Task[] {
    const out: Task[] = [];
    for (let i = this.#head; i < this.#items.length; i++) {
      const task = this.#items[i];
      if (task !== undefined) out.push(task);
    }
    this.#items = [];
    this.#head = 0;
    return out;
  }
}

class AccountQueues {
  readonly byPriority: Fifo[] = Array.from({ length: PRIORITIES }, () => new Fifo());
  queued = 0;
  processing = 0;
  readonly idempotency = new Map<string, Task>();
}

/** All tasks, queued per account and priority. */
export class TaskStore {
  #byId = new Map<string, Task>();
  #accounts = new Map<string, AccountQueues>();
  #finished = new Fifo();
  #nextSeq = 1;

  /** Tasks known (any state). */
  get size(): number {
    return this.#byId.size;
  }

  /** The next submission sequence number. */
  nextSeq(): number {
    return this.#nextSeq++;
  }

  /** A task by id. */
  get(id: string): Task | undefined {
    return this.#byId.get(id);
  }

  /** Every task, in no particular order. */
  all(): IterableIterator<Task> {
    return this.#byId.values();
  }

  /** The task `accountId` submitted with `key`, if any. */
  findByIdempotencyKey(accountId: string, key: string): Task | undefined {
    return this.#accounts.get(accountId)?.idempotency.get(key);
  }

  /** QUEUED tasks of `accountId`. */
  queuedCount(accountId: string): number {
    return this.#accounts.get(accountId)?.queued ?? 0;
  }

  /** PROCESSING tasks of `accountId`. */
  processingCount(accountId: string): number {
    return this.#accounts.get(accountId)?.processing ?? 0;
  }

  /** Accounts that have QUEUED tasks. */
  *accountsWithQueued(): IterableIterator<string> {
    for (const [id, queues] of this.#accounts) if (queues.queued > 0) yield id;
  }

  /** QUEUED counts by priority, highest first, empty priorities left out. */
  priorityBreakdown(accountId: string): { priority: number; count: number }[] {
    const queues = this.#accounts.get(accountId);
    if (queues === undefined) return [];
    const out: { priority: number; count: number }[] = [];
    for (let p = PRIORITIES; p >= 1; p--) {
      const count = queues.byPriority[p - 1]?.length ?? 0;
      if (count > 0) out.push({ priority: p, count });
    }
    return out;
  }

  /**
   * Adds a task in whatever state it has: QUEUED goes to its queue, finished
   * to the expiry order. PROCESSING (from a journal after a crash) is queued
   * again.
   */
  add(task: Task): void {
    if (task.status === "PROCESSING") {
      task.status = "QUEUED";
      task.startedAt = null;
    }
    this.#byId.set(task.id, task);
    if (task.seq >= this.#nextSeq) this.#nextSeq = task.seq + 1;
    const queues = this.#queues(task.accountId);
    if (task.idempotencyKey !== null) queues.idempotency.set(task.idempotencyKey, task);
    if (task.status === "QUEUED") {
      queues.byPriority[task.priority - 1]?.push(task);
      queues.queued++;
    } else {
      this.#finished.push(task);
    }
  }

  /** Takes `accountId`'s next task (highest priority, oldest) and marks it PROCESSING. */
  start(accountId: string, now: Date): Task | undefined {
    const queues = this.#accounts.get(accountId);
    if (queues === undefined || queues.queued === 0) return undefined;
    for (let p = PRIORITIES; p >= 1; p--) {
      const task = queues.byPriority[p - 1]?.shift();
      if (task === undefined) continue;
      queues.queued--;
      queues.processing++;
      task.status = "PROCESSING";
      task.startedAt = now.toISOString();
      return task;
    }
    return undefined;
  }

  /** Records the outcome of a PROCESSING task. */
  finish(task: Task, outcome: Pick<Task, "status" | "result" | "error">, now: Date): void {
    const queues = this.#queues(task.accountId);
    queues.processing--;
    task.status = outcome.status;
    task.result = outcome.result;
    task.error = outcome.error;
    task.finishedAt = now.toISOString();
    task.latencyMs = task.startedAt === null
      ? null
      : Math.max(0, now.getTime() - Date.parse(task.startedAt));
    this.#finished.push(task);
  }

  /** Deletes every QUEUED task of `accountId`; returns them. */
  clearQueued(accountId: string): Task[] {
    const queues = this.#accounts.get(accountId);
    if (queues === undefined) return [];
    const cleared = queues.byPriority.flatMap((fifo) => fifo.drain());
    queues.queued = 0;
    for (const task of cleared) this.#forget(task);
    return cleared;
  }

  /** Deletes finished tasks older than `ttlMs` at `nowMs`; returns them. */
  expire(nowMs: number, ttlMs: number): Task[] {
    const expired: Task[] = [];
    for (let oldest = this.#finished.peek(); oldest !== undefined; oldest = this.#finished.peek()) {
      if (Date.parse(oldest.finishedAt ?? oldest.createdAt) + ttlMs > nowMs) break;
      this.#finished.shift();
      if (this.#byId.get(oldest.id) === oldest) {
        this.#forget(oldest);
        expired.push(oldest);
      }
    }
    return expired;
  }

  #forget(task: Task): void {
    this.#byId.delete(task.id);
    const queues = this.#accounts.get(task.accountId);
    if (queues !== undefined && task.idempotencyKey !== null) {
      if (queues.idempotency.get(task.idempotencyKey) === task) {
        queues.idempotency.delete(task.idempotencyKey);
      }
    }
  }

  #queues(accountId: string): AccountQueues {
    let queues = this.#accounts.get(accountId);
    if (queues === undefined) {
      queues = new AccountQueues();
      this.#accounts.set(accountId, queues);
    }
    return queues;
  }
}
