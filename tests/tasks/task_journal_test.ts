/**
 * TaskJournal durability on a real temp dir: group commit (a burst of
 * concurrent writes all resolve, and what resolved is on disk), replay keeps
 * the last record per id and honours deletes, a torn last line from a crash is
 * ignored and cut, and compaction keeps exactly the live tasks.
 */

import assert from "node:assert/strict";
import type { Task } from "../../src/tasks/task.ts";
import { TaskJournal } from "../../src/tasks/task_journal.ts";

let seq = 0;

function makeTask(fields: Partial<Task> = {}): Task {
  return {
    id: crypto.randomUUID(),
    accountId: "acme",
    taskType: "CHATGPT",
    payload: { prompt: "shoes" },
    priority: 1,
    idempotencyKey: null,
    status: "QUEUED",
    createdAt: "2026-06-01T12:00:00.000Z",
    startedAt: null,
    finishedAt: null,
    latencyMs: null,
    attempts: 0,
    result: null,
    error: null,
    webhook: null,
    seq: ++seq,
    ...fields,
  };
}

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sluice_journal_" });
  try {
    await run(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Opens the journal of `dir` over `live`, the tasks compaction keeps. */
function open(dir: string, live: Map<string, Task> = new Map(), compactAfterRecords?: number) {
  return TaskJournal.open(dir, {
    liveTasks: () => live.values(),
    ...(compactAfterRecords === undefined ? {} : { compactAfterRecords }),
  });
}

/** Replays `dir` as a restart would, closing the journal again. */
async function replay(dir: string): Promise<Task[]> {
  const { journal, tasks } = await open(dir);
  await journal.close();
  return tasks;
}

async function lines(path: string): Promise<string[]> {
  return (await Deno.readTextFile(path)).split("\n").filter((line) => line !== "");
}

Deno.test("TaskJournal group commit: N concurrent puts all resolve, and replay returns every one", async () => {
  await withDir(async (dir) => {
    const { journal, tasks } = await open(dir);
    assert.deepEqual(tasks, []);
    const burst = Array.from({ length: 500 }, (_, i) => makeTask({ priority: 1 + (i % 10) }));
    const settled = await Promise.allSettled(burst.map((task) => journal.put(task)));
    assert.ok(settled.every((s) => s.status === "fulfilled"));
    // Resolved means written: the file already holds every record, before close.
    assert.equal((await lines(journal.path)).length, 500);
    await journal.close();

    const restored = await replay(dir);
    assert.equal(restored.length, 500);
    assert.deepEqual(restored.map((t) => t.id), burst.map((t) => t.id), "in submission order");
    assert.deepEqual(restored[7], burst[7]);
  });
});

Deno.test("TaskJournal.putAll() resolves once every task is written", async () => {
  await withDir(async (dir) => {
    const { journal } = await open(dir);
    const batch = [makeTask(), makeTask(), makeTask()];
    await journal.putAll(batch);
    assert.equal((await lines(journal.path)).length, 3);
    await journal.close();
    assert.equal((await replay(dir)).length, 3);
  });
});

Deno.test("TaskJournal replay keeps the last record per id", async () => {
  await withDir(async (dir) => {
    const { journal } = await open(dir);
    const task = makeTask();
    await journal.put(structuredClone(task));
    await journal.put({ ...task, status: "PROCESSING", attempts: 1 });
    await journal.put({
      ...task,
      status: "COMPLETED",
      attempts: 2,
      result: { text: "done" },
      finishedAt: "2026-06-01T12:00:05.000Z",
    });
    const other = makeTask();
    await journal.put(other);
    await journal.close();

    const restored = await replay(dir);
    assert.equal(restored.length, 2);
    const [first, second] = restored;
    assert.equal(first?.id, task.id);
    assert.equal(first.status, "COMPLETED");
    assert.equal(first.attempts, 2);
    assert.deepEqual(first.result, { text: "done" });
    assert.deepEqual(second, other);
  });
});

Deno.test("TaskJournal.delete() removes a task from replay; a later put brings it back", async () => {
  await withDir(async (dir) => {
    const { journal } = await open(dir);
    const gone = makeTask();
    const kept = makeTask();
    const back = makeTask();
    await Promise.all([journal.put(gone), journal.put(kept), journal.put(back)]);
    await Promise.all([journal.delete(gone.id), journal.delete(back.id)]);
    await journal.put(back);
    await journal.close();
    assert.deepEqual((await replay(dir)).map((t) => t.id), [kept.id, back.id]);
  });
});

Deno.test("TaskJournal ignores a torn last line, cuts it, and appends cleanly after it", async () => {
  await withDir(async (dir) => {
    const { journal } = await open(dir);
    const tasks = [makeTask(), makeTask()];
    await journal.putAll(tasks);
    await journal.close();
    const whole = await Deno.readTextFile(journal.path);
    // A crash in the middle of appending a third record.
    const torn = JSON.stringify({ op: "put", task: makeTask() }).slice(0, 57);
    await Deno.writeTextFile(journal.path, torn, { append: true });

    const reopened = await open(dir);
    assert.deepEqual(reopened.tasks.map((t) => t.id), tasks.map((t) => t.id));
    assert.equal(await Deno.readTextFile(journal.path), whole, "the torn tail is cut");
    const after = makeTask();
    await reopened.journal.put(after);
    await reopened.journal.close();

    const restored = await replay(dir);
    assert.deepEqual(restored.map((t) => t.id), [...tasks, after].map((t) => t.id));
    for (const line of await lines(journal.path)) JSON.parse(line);
  });
});

Deno.test("TaskJournal compaction rewrites the file with exactly one record per live task", async () => {
  await withDir(async (dir) => {
    const live = new Map<string, Task>();
    const { journal } = await open(dir, live, 20);
    const tasks = Array.from({ length: 8 }, () => makeTask());
    for (const task of tasks) live.set(task.id, task);
    await journal.putAll(tasks);
    // Many updates of the same tasks, then some deletions.
    for (let round = 1; round <= 5; round++) {
      for (const task of tasks) task.attempts = round;
      await journal.putAll(tasks);
    }
    for (const task of tasks.slice(0, 3)) {
      live.delete(task.id);
      await journal.delete(task.id);
    }
    const last = tasks[7];
    assert.ok(last !== undefined);
    last.status = "COMPLETED";
    await journal.put(last);
    await journal.flush();

    // 8 puts + 5 × 8 updates + 3 deletes + 1 put would be 52 records; the
    // last write took the count to 20 and triggered a rewrite of the 5 live tasks.
    const records = (await lines(journal.path)).map((line) => JSON.parse(line));
    assert.equal(records.length, live.size, "one record per live task");
    assert.ok(records.every((r) => r.op === "put"));
    const putIds = records.map((r) => r.task.id);
    assert.deepEqual(new Set(putIds), new Set(live.keys()), "the live tasks, no others");
    assert.equal(records.find((r) => r.task.id === last.id)?.task.status, "COMPLETED");

    // The journal keeps working after the rewrite.
    const fresh = makeTask();
    live.set(fresh.id, fresh);
    await journal.put(fresh);
    await journal.close();
    const restored = await replay(dir);
    assert.deepEqual(new Set(restored.map((t) => t.id)), new Set(live.keys()));
    assert.equal(restored.find((t) => t.id === last.id)?.status, "COMPLETED");
    assert.ok(restored.every((t) => t.attempts === 5 || t.id === fresh.id));
    const leftovers = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.deepEqual(leftovers, ["tasks.jsonl"], "no temp files left behind");
  });
});

Deno.test("TaskJournal refuses writes after close()", async () => {
  await withDir(async (dir) => {
    const { journal } = await open(dir);
    await journal.close();
    await assert.rejects(journal.put(makeTask()), /closed/);
    await journal.close(); // closing twice is harmless
  });
});

Deno.test("TaskJournal keeps accepting writes when a compaction fails", async () => {
  await withDir(async (dir) => {
    const sub = `${dir}/data`;
    const { journal } = await open(sub, new Map(), 4);
    // The open file still takes appends, but the rewrite cannot create its temp file.
    await Deno.remove(sub, { recursive: true });
    await journal.putAll([makeTask(), makeTask(), makeTask(), makeTask()]);
    await journal.flush();
    // A watchdog, not a wait: it only turns a write that never settles into a failure.
    let watchdog: ReturnType<typeof setTimeout> | undefined;
    const hung = new Promise<string>((resolve) => watchdog = setTimeout(resolve, 5000, "hung"));
    const outcome = await Promise.race([
      journal.put(makeTask()).then(() => "written", () => "rejected"),
      hung,
    ]);
    clearTimeout(watchdog);
    assert.equal(outcome, "written", "a write after a failed compaction still goes through");
    await journal.close();
  });
});
