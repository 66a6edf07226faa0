/**
 * Durability over a real process (SPEC §5): `main.ts serve` with the built-in
 * simulator slowed to 20 s, so tasks stay QUEUED or PROCESSING. A graceful
 * stop (SIGTERM) exits 0 and a restart on the same files knows every task,
 * with the ones that were PROCESSING queued again; a SIGKILL in the middle of
 * a stream of submissions loses no task whose submission was answered 200.
 */

import assert from "node:assert/strict";
import { type RunningProcess, startDeno } from "../shipping/_process.ts";
import { SubmitReplySchema, TaskViewSchema } from "./_harness.ts";
import { z } from "zod";

const MAIN = new URL("../../main.ts", import.meta.url).pathname;
const ROOT = new URL("../../", import.meta.url).pathname;
const KEY_LINE = /^\s+(sk_[A-Za-z0-9_-]+)$/;
const LISTENING = /listening on http:\/\/127\.0\.0\.1:(\d+)/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface Gateway {
  process: RunningProcess;
  base: string;
}

/** Starts the gateway on `dir`'s plans and data; resolves once it listens. */
async function startGateway(dir: string, simLatency = "20000-20000"): Promise<Gateway> {
  const process = startDeno([
    "run",
    "-A",
    MAIN,
    "serve",
    "--port",
    "0",
    "--hostname",
    "127.0.0.1",
    "--plans",
    `${dir}/plans.json`,
    "--data-dir",
    `${dir}/data`,
    "--sim-latency",
    simLatency,
  ], ROOT);
  try {
    const [, port] = await process.waitForLine(LISTENING);
    return { process, base: `http://127.0.0.1:${port}` };
  } catch (error) {
    throw new Error(`gateway did not start: ${await process.stderr}`, { cause: error });
  }
}

/** Sends `signal` and waits for the exit; returns the status. */
async function stop(gateway: Gateway, signal: Deno.Signal): Promise<Deno.CommandStatus> {
  try {
    gateway.process.child.kill(signal);
  } catch {
    // Already gone.
  }
  const status = await gateway.process.status;
  await gateway.process.stderr;
  return status;
}

/** Runs `body` with a temp dir; the gateways it registers are killed if still running. */
async function withDir(run: (dir: string, running: Gateway[]) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sluice_durability_" });
  const running: Gateway[] = [];
  try {
    await run(dir, running);
  } finally {
    for (const gateway of running) await stop(gateway, "SIGKILL");
    await Deno.remove(dir, { recursive: true });
  }
}

function submitRequest(base: string, key: string, body: unknown): Promise<Response> {
  return fetch(`${base}/v1/async/task`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function getTask(base: string, key: string, id: string) {
  const response = await fetch(`${base}/v1/async/task/${id}`, {
    headers: { authorization: `Bearer ${key}` },
  });
  const body: unknown = await response.json();
  return { status: response.status, body };
}

const GetReply = z.object({ success: z.literal(true), task: TaskViewSchema });

Deno.test("SIGTERM exits 0; after a restart every task is known, and PROCESSING ones are queued again", async () => {
  await withDir(async (dir, running) => {
    const first = await startGateway(dir);
    running.push(first);
    const [, key = ""] = await first.process.waitForLine(KEY_LINE);

    const submitted: { id: string; priority: number; idempotencyKey: string }[] = [];
    for (let i = 0; i < 14; i++) {
      const input = {
        taskType: i % 2 === 0 ? "CHATGPT" : "PERPLEXITY",
        payload: { prompt: `durable ${i}` },
        priority: 1 + (i % 10),
        idempotencyKey: `durable-${i}`,
      };
      const response = await submitRequest(first.base, key, input);
      assert.equal(response.status, 200);
      const { task } = SubmitReplySchema.parse(await response.json());
      submitted.push({
        id: task.id,
        priority: input.priority,
        idempotencyKey: input.idempotencyKey,
      });
    }
    const before = new Map<string, string>();
    for (const { id } of submitted) {
      const { body } = await getTask(first.base, key, id);
      before.set(id, GetReply.parse(body).task.status);
    }
    const processingBefore = [...before].filter(([, s]) => s === "PROCESSING").map(([id]) => id);
    assert.equal(processingBefore.length, 10, "the demo plan has 10 slots");
    assert.equal([...before.values()].filter((s) => s === "QUEUED").length, 4);

    const stopped = await stop(first, "SIGTERM");
    assert.equal(stopped.code, 0, first.process.lines.join("\n"));
    running.pop();

    const restartedAtMs = Date.now();
    const second = await startGateway(dir);
    running.push(second);
    await second.process.waitForLine(/Restored 14 task\(s\)/);
    for (const { id, priority, idempotencyKey } of submitted) {
      const { status, body } = await getTask(second.base, key, id);
      assert.equal(status, 200, `${id} is known after the restart`);
      const task = GetReply.parse(body).task;
      assert.equal(task.priority, priority);
      assert.equal(task.idempotencyKey, idempotencyKey);
      assert.ok(task.attempts <= 1, "an interrupted run is not counted as a failed attempt");
      assert.ok(task.status === "QUEUED" || task.status === "PROCESSING", task.status);
      if (processingBefore.includes(id) && task.startedAt !== null) {
        assert.ok(
          Date.parse(task.startedAt) >= restartedAtMs - 1000,
          "a task PROCESSING at shutdown is queued again, then started afresh",
        );
      }
    }
    // Tasks 0 and 1 (priorities 1 and 2) were PROCESSING at shutdown; queued
    // again, they now wait behind the 10 higher-priority ones.
    for (const { id } of submitted.slice(0, 2)) {
      assert.ok(processingBefore.includes(id));
      const { body } = await getTask(second.base, key, id);
      const task = GetReply.parse(body).task;
      assert.equal(task.status, "QUEUED");
      assert.equal(task.startedAt, null);
    }
    // The idempotency index survives too.
    const again = await submitRequest(second.base, key, {
      taskType: "CHATGPT",
      payload: {},
      idempotencyKey: "durable-3",
    });
    assert.equal(again.status, 409);
    const conflict = await again.json();
    assert.equal(conflict.error.details.taskId, submitted[3]?.id);

    assert.equal((await stop(second, "SIGTERM")).code, 0);
    running.pop();
  });
});

Deno.test("SIGKILL during a stream of submissions loses no task that was answered 200", async () => {
  await withDir(async (dir, running) => {
    const first = await startGateway(dir);
    running.push(first);
    const [, key = ""] = await first.process.waitForLine(KEY_LINE);

    // A stream: 50 clients, each sending its next submission as soon as the
    // last is answered, so there are always submissions in flight. Group
    // commit answers them in bursts; the kill comes on the burst that takes
    // the count past `killAfter`.
    const acknowledged: string[] = [];
    const clients = 50;
    const killAfter = 150;
    let sent = 0;
    let failed = 0;
    let killed = false;
    async function client(): Promise<void> {
      while (!killed) {
        const i = sent++;
        try {
          const response = await submitRequest(first.base, key, {
            taskType: "GEMINI",
            payload: { prompt: `crash ${i}` },
            priority: 1 + (i % 10),
          });
          const body: unknown = await response.json();
          if (response.status !== 200) continue;
          acknowledged.push(SubmitReplySchema.parse(body).task.id);
          if (acknowledged.length >= killAfter && !killed) {
            killed = true;
            first.process.child.kill("SIGKILL");
          }
        } catch {
          failed++;
          return;
        }
      }
    }
    await Promise.all(Array.from({ length: clients }, () => client()));
    const status = await first.process.status;
    await first.process.stderr;
    running.pop();
    assert.equal(status.signal, "SIGKILL");
    assert.ok(acknowledged.length >= killAfter);
    assert.ok(
      failed > 0,
      `the kill came while submissions were in flight (${acknowledged.length} acknowledged)`,
    );

    const second = await startGateway(dir);
    running.push(second);
    for (const id of acknowledged) {
      assert.match(id, UUID);
      const { status, body } = await getTask(second.base, key, id);
      assert.equal(status, 200, `acknowledged task ${id} survived the crash`);
      const task = GetReply.parse(body).task;
      assert.ok(task.status === "QUEUED" || task.status === "PROCESSING", task.status);
    }
    console.log(`${acknowledged.length} of ${sent} acknowledged before SIGKILL, ${failed} cut off`);
    assert.equal((await stop(second, "SIGTERM")).code, 0);
    running.pop();
  });
});

Deno.test("SIGTERM lets a task that finishes within the grace period complete, and persists it", async () => {
  await withDir(async (dir, running) => {
    // Long enough to still be running when SIGTERM arrives, well inside the 1 s grace.
    const first = await startGateway(dir, "300-300");
    running.push(first);
    const [, key = ""] = await first.process.waitForLine(KEY_LINE);
    const response = await submitRequest(first.base, key, {
      taskType: "CHATGPT",
      payload: { prompt: "finish me" },
    });
    const { task } = SubmitReplySchema.parse(await response.json());
    assert.equal(task.status, "PROCESSING");

    const stopped = await stop(first, "SIGTERM");
    assert.equal(stopped.code, 0);
    running.pop();

    const second = await startGateway(dir, "300-300");
    running.push(second);
    const { status, body } = await getTask(second.base, key, task.id);
    assert.equal(status, 200);
    const after = GetReply.parse(body).task;
    assert.equal(after.status, "COMPLETED", "finished during the drain, so not run again");
    assert.match(JSON.stringify(after.result), /finish me/);
    assert.equal((await stop(second, "SIGTERM")).code, 0);
    running.pop();
  });
});
