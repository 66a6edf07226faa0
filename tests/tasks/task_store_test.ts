/**
 * TaskStore is pure state: per account, highest priority first and FIFO within
 * a priority; the idempotency index; clearing the queue; expiry of finished
 * tasks by TTL; and re-queuing tasks that were PROCESSING when the process died.
 */

import assert from "node:assert/strict";
import type { Task } from "../../src/tasks/task.ts";
import { TaskStore } from "../../src/tasks/task_store.ts";

const T0 = Date.parse("2026-06-01T12:00:00Z");

function makeTask(store: TaskStore, fields: Partial<Task> = {}): Task {
  return {
    id: crypto.randomUUID(),
    accountId: "acme",
    taskType: "CHATGPT",
    payload: {},
    priority: 1,
    idempotencyKey: null,
    status: "QUEUED",
    createdAt: new Date(T0).toISOString(),
    startedAt: null,
    finishedAt: null,
    latencyMs: null,
    attempts: 0,
    result: null,
    error: null,
    webhook: null,
    seq: store.nextSeq(),
    ...fields,
  };
}

function drain(store: TaskStore, accountId: string): Task[] {
  const out: Task[] = [];
  for (
    let task = store.start(accountId, new Date(T0));
    task;
    task = store.start(accountId, new Date(T0))
  ) {
    out.push(task);
  }
  return out;
}

Deno.test("TaskStore.start() hands out the highest priority first, FIFO within a priority", () => {
  const store = new TaskStore();
  const priorities = [1, 5, 10, 5, 1, 10, 3, 5];
  const tasks = priorities.map((priority) => makeTask(store, { priority }));
  for (const task of tasks) store.add(task);
  assert.equal(store.queuedCount("acme"), 8);

  const order = drain(store, "acme");
  const expected = [...tasks].sort((a, b) => b.priority - a.priority || a.seq - b.seq);
  assert.deepEqual(order.map((t) => t.id), expected.map((t) => t.id));
  assert.deepEqual(order.map((t) => t.priority), [10, 10, 5, 5, 5, 3, 1, 1]);
  assert.ok(order.every((t) => t.status === "PROCESSING" && t.startedAt !== null));
  assert.equal(store.queuedCount("acme"), 0);
  assert.equal(store.processingCount("acme"), 8);
  assert.equal(store.start("acme", new Date(T0)), undefined);
});

Deno.test("TaskStore keeps FIFO order across many tasks, with later adds after earlier starts", () => {
  const store = new TaskStore();
  const added: Task[] = [];
  const started: Task[] = [];
  // Interleave adds and starts well past the internal compaction threshold.
  for (let i = 0; i < 5000; i++) {
    const task = makeTask(store, { priority: 4 });
    store.add(task);
    added.push(task);
    if (i % 3 === 2) started.push(store.start("acme", new Date(T0)) ?? assert.fail("empty"));
  }
  started.push(...drain(store, "acme"));
  assert.deepEqual(started.map((t) => t.seq), added.map((t) => t.seq));
});

Deno.test("TaskStore queues are per account", () => {
  const store = new TaskStore();
  const a = makeTask(store, { accountId: "a", priority: 1 });
  const b = makeTask(store, { accountId: "b", priority: 10 });
  store.add(a);
  store.add(b);
  assert.deepEqual([...store.accountsWithQueued()].sort(), ["a", "b"]);
  assert.equal(store.start("a", new Date(T0))?.id, a.id);
  assert.equal(store.start("a", new Date(T0)), undefined, "b's task is not a's");
  assert.deepEqual([...store.accountsWithQueued()], ["b"]);
  assert.equal(store.start("nobody", new Date(T0)), undefined);
});

Deno.test("TaskStore.priorityBreakdown() lists queued counts highest priority first", () => {
  const store = new TaskStore();
  for (const priority of [2, 7, 7, 10, 2, 2]) store.add(makeTask(store, { priority }));
  store.start("acme", new Date(T0)); // takes one priority-10 task
  assert.deepEqual(store.priorityBreakdown("acme"), [
    { priority: 7, count: 2 },
    { priority: 2, count: 3 },
  ]);
  assert.deepEqual(store.priorityBreakdown("nobody"), []);
});

Deno.test("TaskStore finds tasks by idempotency key, per account, until they are deleted", () => {
  const store = new TaskStore();
  const keyed = makeTask(store, { idempotencyKey: "k1" });
  store.add(keyed);
  store.add(makeTask(store, { accountId: "other", idempotencyKey: "k2" }));
  assert.equal(store.findByIdempotencyKey("acme", "k1"), keyed);
  assert.equal(store.findByIdempotencyKey("other", "k1"), undefined, "keys are per account");
  assert.equal(store.findByIdempotencyKey("acme", "k2"), undefined);

  // Still found while running and once finished.
  const task = store.start("acme", new Date(T0));
  assert.equal(task, keyed);
  assert.equal(store.findByIdempotencyKey("acme", "k1"), keyed);
  store.finish(keyed, { status: "COMPLETED", result: 1, error: null }, new Date(T0 + 10));
  assert.equal(store.findByIdempotencyKey("acme", "k1"), keyed);

  // Expiry frees the key.
  store.expire(T0 + 20, 5);
  assert.equal(store.findByIdempotencyKey("acme", "k1"), undefined);
  assert.equal(store.get(keyed.id), undefined);
});

Deno.test("TaskStore.clearQueued() deletes only QUEUED tasks of the account, and frees their keys", () => {
  const store = new TaskStore();
  const running = makeTask(store, { priority: 9, idempotencyKey: "run" });
  store.add(running);
  store.start("acme", new Date(T0));
  const queued = [1, 5, 10].map((priority, i) =>
    makeTask(store, { priority, idempotencyKey: `q${i}` })
  );
  for (const task of queued) store.add(task);
  const theirs = makeTask(store, { accountId: "other" });
  store.add(theirs);

  const cleared = store.clearQueued("acme");
  assert.deepEqual(new Set(cleared.map((t) => t.id)), new Set(queued.map((t) => t.id)));
  assert.equal(store.queuedCount("acme"), 0);
  assert.equal(store.processingCount("acme"), 1);
  assert.equal(store.get(running.id)?.status, "PROCESSING");
  for (const task of queued) assert.equal(store.get(task.id), undefined);
  assert.equal(store.findByIdempotencyKey("acme", "q0"), undefined);
  assert.equal(store.findByIdempotencyKey("acme", "run"), running);
  assert.equal(store.start("acme", new Date(T0)), undefined);
  assert.equal(store.queuedCount("other"), 1);
  assert.deepEqual(store.clearQueued("nobody"), []);
});

Deno.test("TaskStore.finish() records outcome and latency and moves the task out of PROCESSING", () => {
  const store = new TaskStore();
  const task = makeTask(store);
  store.add(task);
  store.start("acme", new Date(T0));
  store.finish(
    task,
    { status: "FAILED", result: null, error: { code: "UPSTREAM_ERROR", message: "x" } },
    new Date(T0 + 750),
  );
  assert.equal(task.status, "FAILED");
  assert.equal(task.latencyMs, 750);
  assert.equal(task.finishedAt, new Date(T0 + 750).toISOString());
  assert.deepEqual(task.error, { code: "UPSTREAM_ERROR", message: "x" });
  assert.equal(store.processingCount("acme"), 0);
  assert.equal(store.queuedCount("acme"), 0);
});

Deno.test("TaskStore.expire() deletes finished tasks older than the TTL, oldest first, never unfinished ones", () => {
  const store = new TaskStore();
  const tasks = [0, 1, 2, 3].map(() => makeTask(store));
  for (const task of tasks) store.add(task);
  for (let i = 0; i < tasks.length; i++) store.start("acme", new Date(T0));
  tasks.forEach((task, i) => {
    store.finish(task, { status: "COMPLETED", result: i, error: null }, new Date(T0 + i * 1000));
  });
  const waiting = makeTask(store);
  store.add(waiting);
  const ttlMs = 10_000;

  assert.deepEqual(store.expire(T0 + ttlMs - 1, ttlMs), [], "nothing is old enough yet");
  assert.deepEqual(store.expire(T0 + ttlMs + 1500, ttlMs).map((t) => t.id), [
    tasks[0]?.id,
    tasks[1]?.id,
  ]);
  assert.equal(store.size, 3);
  assert.deepEqual(store.expire(T0 + 10 * ttlMs, ttlMs).map((t) => t.id), [
    tasks[2]?.id,
    tasks[3]?.id,
  ]);
  assert.equal(store.get(waiting.id)?.status, "QUEUED", "a QUEUED task never expires");
  assert.equal(store.size, 1);
});

Deno.test("TaskStore.add() puts a task that was PROCESSING (restored after a crash) back in its queue", () => {
  const store = new TaskStore();
  const crashed = makeTask(store, {
    status: "PROCESSING",
    startedAt: new Date(T0).toISOString(),
    attempts: 2,
    priority: 3,
    seq: 7,
  });
  const finished = makeTask(store, {
    status: "COMPLETED",
    finishedAt: new Date(T0).toISOString(),
    seq: 8,
  });
  store.add(crashed);
  store.add(finished);
  assert.equal(crashed.status, "QUEUED");
  assert.equal(crashed.startedAt, null);
  assert.equal(store.queuedCount("acme"), 1);
  assert.equal(store.processingCount("acme"), 0);
  assert.equal(store.start("acme", new Date(T0 + 1)), crashed);
  assert.ok(store.nextSeq() > 8, "sequence numbers continue after restored ones");
});
