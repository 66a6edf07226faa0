/**
 * The async task routes (SPEC §4-5) through `app.request()`: every route and
 * every answer it can give, on a gateway composed like `main.ts` (see
 * `tests/tasks/_harness.ts`). The simulator is held by a gate, so tasks stay
 * QUEUED or PROCESSING for exactly as long as a test needs them to.
 */

import assert from "node:assert/strict";
import { z } from "zod";
import type { PlansFile } from "../../src/plans/schema.ts";
import type { Forwarder } from "../../src/upstream/forwarder.ts";
import type { Simulator } from "../../src/upstream/simulator.ts";
import { testKey } from "../_helpers.ts";
import {
  errorOf,
  GetReplySchema,
  type Harness,
  type HarnessOptions,
  type Reply,
  startHarness,
  SubmitReplySchema,
  taskInput,
  TaskSummarySchema,
} from "../tasks/_harness.ts";

const PLANS: PlansFile["plans"] = {
  solo: { concurrency: 1, queueLimit: 3 },
  team: { concurrency: 4 },
  tight: { concurrency: 4, rateLimit: { requests: 5, windowMs: 60_000 } },
};
const ACCOUNTS = { acme: "team", other: "team", solo: "solo", tight: "tight" };
const UNKNOWN_ID = "00000000-0000-4000-8000-000000000000";

const BatchReplySchema = z.strictObject({
  success: z.literal(true),
  accepted: z.int(),
  rejected: z.int(),
  results: z.array(
    z.union([
      z.strictObject({ index: z.int(), success: z.literal(true), task: TaskSummarySchema }),
      z.strictObject({
        index: z.int(),
        success: z.literal(false),
        error: z.strictObject({
          code: z.string(),
          message: z.string(),
          details: z.record(z.string(), z.unknown()).optional(),
          timestamp: z.string(),
        }),
      }),
    ]),
  ),
});

const StatusReplySchema = z.strictObject({
  success: z.literal(true),
  queuedTasks: z.int(),
  processingTasks: z.int(),
  priorityBreakdown: z.array(z.strictObject({ priority: z.int(), count: z.int() })),
  concurrency: z.strictObject({ used: z.int(), max: z.int() }),
});

const FieldsSchema = z.object({
  fields: z.array(z.object({ path: z.string(), message: z.string() })).min(1),
});

async function withHarness(
  run: (h: Harness) => Promise<void>,
  options: Partial<HarnessOptions> = {},
): Promise<void> {
  const h = await startHarness({ plans: PLANS, accounts: ACCOUNTS, ...options });
  try {
    await run(h);
  } finally {
    await h.close();
  }
}

async function submit(h: Harness, account: string, input = taskInput()) {
  const reply = await h.call(account, "POST", "/v1/async/task", input);
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  return SubmitReplySchema.parse(reply.body).task;
}

async function statusOf(h: Harness, account: string) {
  const reply = await h.call(account, "GET", "/v1/async/status");
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  return StatusReplySchema.parse(reply.body);
}

/** Asserts a 400 VALIDATION_ERROR whose fields include `path`. */
function assertInvalid(reply: Reply, path: string): void {
  assert.equal(reply.status, 400, JSON.stringify(reply.body));
  const error = errorOf(reply);
  assert.equal(error.code, "VALIDATION_ERROR");
  const { fields } = FieldsSchema.parse(error.details);
  assert.ok(
    fields.some((field) => field.path === path),
    `expected a field error at ${path}: ${JSON.stringify(fields)}`,
  );
}

/** A forwarder answering 400 to payloads `{fail: true}`, else the simulator. */
function failingOnRequest(simulator: Simulator): Forwarder {
  return {
    servesAnyPath: false,
    async forward(request, context) {
      const payload: unknown = await request.clone().json();
      if (typeof payload === "object" && payload !== null && "fail" in payload) {
        return Response.json({ message: "no such prompt" }, { status: 400 });
      }
      return await simulator.forward(request, context);
    },
  };
}

Deno.test("POST /v1/async/task answers 200 with the task summary, its id a UUID", async () => {
  await withHarness(async (h) => {
    const reply = await h.call("acme", "POST", "/v1/async/task", taskInput());
    assert.equal(reply.status, 200);
    const { task } = SubmitReplySchema.parse(reply.body);
    assert.deepEqual(Object.keys(task).sort(), [
      "createdAt",
      "id",
      "idempotencyKey",
      "latencyMs",
      "priority",
      "status",
      "taskType",
    ]);
    assert.equal(task.taskType, "CHATGPT");
    assert.equal(task.priority, 1, "priority defaults to 1");
    assert.equal(task.idempotencyKey, null);
    assert.equal(task.latencyMs, null);
    assert.equal(task.createdAt, new Date(h.clock.nowMs()).toISOString());
    assert.ok(task.status === "QUEUED" || task.status === "PROCESSING");

    const keyed = await submit(
      h,
      "acme",
      taskInput({ taskType: "GOOGLE_NEWS", priority: 7, idempotencyKey: "order-1" }),
    );
    assert.equal(keyed.taskType, "GOOGLE_NEWS");
    assert.equal(keyed.priority, 7);
    assert.equal(keyed.idempotencyKey, "order-1");
    assert.notEqual(keyed.id, task.id);
    assert.ok(h.store.get(task.id) !== undefined && h.store.get(keyed.id) !== undefined);
  });
});

Deno.test("POST /v1/async/task answers 400 VALIDATION_ERROR naming the bad field, enqueuing nothing", async () => {
  await withHarness(async (h) => {
    const post = (body: unknown) => h.call("acme", "POST", "/v1/async/task", body);
    assertInvalid(await post(taskInput({ taskType: "ALTAVISTA" })), "taskType");
    assertInvalid(await post(taskInput({ priority: 0 })), "priority");
    assertInvalid(await post(taskInput({ priority: 11 })), "priority");
    assertInvalid(await post(taskInput({ priority: 2.5 })), "priority");
    assertInvalid(await post(taskInput({ payload: "not an object" })), "payload");
    assertInvalid(await post({ payload: {} }), "taskType");
    assertInvalid(await post(taskInput({ idempotencyKey: "" })), "idempotencyKey");
    assertInvalid(
      await post(taskInput({ webhook: { url: "ftp://example.com/x" } })),
      "webhook.url",
    );

    const unknownField = await post(taskInput({ colour: "blue" }));
    assert.equal(unknownField.status, 400);
    assert.equal(errorOf(unknownField).code, "VALIDATION_ERROR");
    assert.match(JSON.stringify(errorOf(unknownField).details), /colour/);

    const malformed = await post('{"taskType": "CHATGPT", "payload": {');
    assert.equal(malformed.status, 400);
    assert.equal(errorOf(malformed).code, "VALIDATION_ERROR");

    assert.equal(h.store.size, 0, "nothing was enqueued");
  });
});

Deno.test("POST /v1/async/task answers 400 VALIDATION_ERROR for a body that is not JSON by content type", async () => {
  await withHarness(async (h) => {
    const body = JSON.stringify(taskInput());
    const cases: [string, string][] = [
      ["/v1/async/task", "text/plain"],
      ["/v1/async/task", "application/x-www-form-urlencoded"],
      ["/v1/async/task", "multipart/form-data; boundary=x"],
      ["/v1/async/task/batch", "text/plain"],
    ];
    for (const [path, contentType] of cases) {
      const headers = { authorization: `Bearer ${testKey("acme")}`, "content-type": contentType };
      const response = await h.app.request(path, { method: "POST", headers, body });
      const reply = {
        status: response.status,
        headers: response.headers,
        body: await response.json(),
      };
      assertInvalid(reply, "content-type");
    }
    assert.equal(h.store.size, 0);
  });
});

Deno.test("POST /v1/async/task answers 409 RESOURCE_ALREADY_EXISTS with the existing id for a repeated idempotencyKey", async () => {
  await withHarness(async (h) => {
    const first = await submit(h, "acme", taskInput({ idempotencyKey: "invoice-42" }));
    const again = await h.call(
      "acme",
      "POST",
      "/v1/async/task",
      taskInput({ idempotencyKey: "invoice-42", priority: 9 }),
    );
    assert.equal(again.status, 409);
    const error = errorOf(again);
    assert.equal(error.code, "RESOURCE_ALREADY_EXISTS");
    assert.equal(error.details?.taskId, first.id);
    assert.equal(h.store.size, 1, "the duplicate was not enqueued");

    // The key is unique per account, not globally.
    const elsewhere = await submit(h, "other", taskInput({ idempotencyKey: "invoice-42" }));
    assert.notEqual(elsewhere.id, first.id);

    // Still a duplicate once the first task has finished.
    h.gate.open();
    await h.settled();
    const afterFinish = await h.call(
      "acme",
      "POST",
      "/v1/async/task",
      taskInput({ idempotencyKey: "invoice-42" }),
    );
    assert.equal(afterFinish.status, 409);
    assert.equal(errorOf(afterFinish).details?.taskId, first.id);
  });
});

Deno.test("POST /v1/async/task answers 429 QUEUE_LIMIT_EXCEEDED with details.limit once queueLimit tasks are QUEUED", async () => {
  await withHarness(async (h) => {
    const running = await submit(h, "solo");
    await h.events.waitFor(() => h.gate.waitingCount === 1, "the first task to run");
    assert.equal(h.store.get(running.id)?.status, "PROCESSING");
    for (let i = 0; i < 3; i++) assert.equal((await submit(h, "solo")).status, "QUEUED");

    const refused = await h.call("solo", "POST", "/v1/async/task", taskInput());
    assert.equal(refused.status, 429);
    const error = errorOf(refused);
    assert.equal(error.code, "QUEUE_LIMIT_EXCEEDED");
    assert.equal(error.details?.limit, 3);
    assert.equal(h.store.queuedCount("solo"), 3, "the refused task was not enqueued");

    // A freed queue place admits again.
    h.gate.release(1);
    await h.events.waitFor(() => h.store.queuedCount("solo") === 2, "the next task to start");
    await submit(h, "solo");
  });
});

Deno.test("POST /v1/async/task refuses a loopback webhook URL with 400 unless private webhooks are allowed", async () => {
  await withHarness(async (h) => {
    for (const url of ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]/x"]) {
      const reply = await h.call("acme", "POST", "/v1/async/task", taskInput({ webhook: { url } }));
      assertInvalid(reply, "webhook.url");
    }
    assert.equal(h.store.size, 0);
    await submit(h, "acme", taskInput({ webhook: { url: "https://hooks.example.com/sluice" } }));
  });
  await withHarness(async (h) => {
    const task = await submit(h, "acme", taskInput({ webhook: { url: "http://127.0.0.1:9/h" } }));
    assert.ok(h.store.get(task.id)?.webhook?.url === "http://127.0.0.1:9/h");
  }, { allowPrivateWebhooks: true });
});

Deno.test("POST /v1/async/task/batch answers per-item results in input order, each with its index", async () => {
  await withHarness(async (h) => {
    const existing = await submit(h, "acme", taskInput({ idempotencyKey: "seen-before" }));
    const reply = await h.call("acme", "POST", "/v1/async/task/batch", [
      taskInput({ priority: 3 }),
      taskInput({ taskType: "ALTAVISTA" }),
      taskInput({ idempotencyKey: "k1" }),
      taskInput({ idempotencyKey: "k1", priority: 9 }),
      taskInput({ idempotencyKey: "seen-before" }),
      42,
      taskInput({ taskType: "GROK", priority: 10 }),
    ]);
    assert.equal(reply.status, 200, JSON.stringify(reply.body));
    const batch = BatchReplySchema.parse(reply.body);
    assert.equal(batch.accepted, 3);
    assert.equal(batch.rejected, 4);
    assert.deepEqual(batch.results.map((r) => r.index), [0, 1, 2, 3, 4, 5, 6]);
    assert.deepEqual(batch.results.map((r) => r.success), [
      true,
      false,
      true,
      false,
      false,
      false,
      true,
    ]);
    const [ok0, bad1, ok2, dup3, dup4, bad5, ok6] = batch.results;
    assert.ok(ok0?.success && ok2?.success && ok6?.success);
    assert.equal(ok0.task.priority, 3);
    assert.equal(ok2.task.idempotencyKey, "k1");
    assert.equal(ok6.task.taskType, "GROK");
    assert.ok(bad1 !== undefined && !bad1.success);
    assert.equal(bad1.error.code, "VALIDATION_ERROR");
    assert.match(JSON.stringify(bad1.error.details), /"1\.taskType"/);
    assert.ok(dup3 !== undefined && !dup3.success, "an in-batch duplicate key is caught");
    assert.equal(dup3.error.code, "VALIDATION_ERROR");
    assert.match(JSON.stringify(dup3.error.details), /"3\.idempotencyKey"/);
    assert.ok(dup4 !== undefined && !dup4.success);
    assert.equal(dup4.error.code, "RESOURCE_ALREADY_EXISTS");
    assert.equal(dup4.error.details?.taskId, existing.id);
    assert.ok(bad5 !== undefined && !bad5.success);
    assert.equal(bad5.error.code, "VALIDATION_ERROR");

    assert.equal(h.store.size, 4, "the earlier task and the three accepted ones");
    for (const item of [ok0, ok2, ok6]) assert.ok(h.store.get(item.task.id) !== undefined);
  });
});

Deno.test("POST /v1/async/task/batch that would overflow the queue is rejected whole with 429, nothing enqueued", async () => {
  await withHarness(async (h) => {
    await submit(h, "solo");
    await h.events.waitFor(() => h.gate.waitingCount === 1, "the first task to run");
    await submit(h, "solo");
    assert.equal(h.store.queuedCount("solo"), 1);

    const reply = await h.call("solo", "POST", "/v1/async/task/batch", [
      taskInput(),
      taskInput({ idempotencyKey: "a" }),
      taskInput({ idempotencyKey: "b" }),
    ]);
    assert.equal(reply.status, 429);
    const error = errorOf(reply);
    assert.equal(error.code, "QUEUE_LIMIT_EXCEEDED");
    assert.equal(error.details?.limit, 3);
    assert.equal(h.store.queuedCount("solo"), 1, "nothing of the batch was enqueued");
    assert.equal(h.store.size, 2);
    assert.equal(h.store.findByIdempotencyKey("solo", "a"), undefined);

    // Two fit exactly.
    const fits = await h.call("solo", "POST", "/v1/async/task/batch", [taskInput(), taskInput()]);
    assert.equal(fits.status, 200);
    assert.equal(BatchReplySchema.parse(fits.body).accepted, 2);
    assert.equal(h.store.queuedCount("solo"), 3);
  });
});

Deno.test("POST /v1/async/task/batch takes 1-500 items: 0 and 501 answer 400", async () => {
  await withHarness(async (h) => {
    const empty = await h.call("acme", "POST", "/v1/async/task/batch", []);
    assert.equal(empty.status, 400);
    assert.equal(errorOf(empty).code, "VALIDATION_ERROR");

    const tooMany = await h.call(
      "acme",
      "POST",
      "/v1/async/task/batch",
      Array.from({ length: 501 }, () => taskInput()),
    );
    assert.equal(tooMany.status, 400);
    assert.equal(errorOf(tooMany).code, "VALIDATION_ERROR");

    const notArray = await h.call("acme", "POST", "/v1/async/task/batch", taskInput());
    assert.equal(notArray.status, 400);
    assert.equal(h.store.size, 0);

    const full = await h.call(
      "acme",
      "POST",
      "/v1/async/task/batch",
      Array.from({ length: 500 }, (_, i) => taskInput({ idempotencyKey: `k${i}` })),
    );
    assert.equal(full.status, 200);
    assert.equal(BatchReplySchema.parse(full.body).accepted, 500);
    assert.equal(h.store.size, 500);
  });
});

Deno.test("GET /v1/async/task/:id: 404 for unknown or another account's task, 400 for a non-UUID", async () => {
  await withHarness(async (h) => {
    const task = await submit(h, "acme");
    const mine = await h.call("acme", "GET", `/v1/async/task/${task.id}`);
    assert.equal(mine.status, 200);
    assert.equal(GetReplySchema.parse(mine.body).task.id, task.id);

    const unknown = await h.call("acme", "GET", `/v1/async/task/${UNKNOWN_ID}`);
    assert.equal(unknown.status, 404);
    assert.equal(errorOf(unknown).code, "RESOURCE_NOT_FOUND");

    const theirs = await h.call("other", "GET", `/v1/async/task/${task.id}`);
    assert.equal(theirs.status, 404, "another account's task does not exist for you");
    assert.equal(errorOf(theirs).code, "RESOURCE_NOT_FOUND");
    assert.doesNotMatch(JSON.stringify(theirs.body), /CHATGPT|best running/);

    for (const bad of ["not-a-uuid", "12345", `${task.id}x`]) {
      const reply = await h.call("acme", "GET", `/v1/async/task/${bad}`);
      assertInvalid(reply, "id");
    }
  });
});

Deno.test("GET /v1/async/task/:id shows the result once COMPLETED and the error once FAILED", async () => {
  await withHarness(async (h) => {
    const good = await submit(h, "acme", taskInput({ payload: { prompt: "trail shoes" } }));
    const bad = await submit(h, "acme", taskInput({ payload: { fail: true } }));
    await h.events.waitFor(() => h.gate.waitingCount === 1, "the good task to run");

    const running =
      GetReplySchema.parse((await h.call("acme", "GET", `/v1/async/task/${good.id}`)).body).task;
    assert.equal(running.status, "PROCESSING");
    assert.equal(running.result, undefined);
    assert.equal(running.error, undefined);
    assert.equal(running.attempts, 1);
    assert.notEqual(running.startedAt, null);

    h.clock.advance(1234);
    h.gate.open();
    await h.settled();

    const done =
      GetReplySchema.parse((await h.call("acme", "GET", `/v1/async/task/${good.id}`)).body).task;
    assert.equal(done.status, "COMPLETED");
    assert.equal(done.error, undefined);
    assert.equal(done.latencyMs, 1234);
    assert.notEqual(done.finishedAt, null);
    assert.match(JSON.stringify(done.result), /trail shoes/);
    assert.equal(done.webhook, null);

    const failed =
      GetReplySchema.parse((await h.call("acme", "GET", `/v1/async/task/${bad.id}`)).body).task;
    assert.equal(failed.status, "FAILED");
    assert.equal(failed.result, undefined);
    assert.equal(failed.error?.code, "UPSTREAM_ERROR");
    assert.match(failed.error?.message ?? "", /400/);
    assert.equal(failed.attempts, 1);
  }, { forwarder: failingOnRequest });
});

Deno.test("GET /v1/async/status reports queued, processing, priorities highest first, and slots", async () => {
  await withHarness(async (h) => {
    assert.deepEqual(await statusOf(h, "solo"), {
      success: true,
      queuedTasks: 0,
      processingTasks: 0,
      priorityBreakdown: [],
      concurrency: { used: 0, max: 1 },
    });
    await submit(h, "solo", taskInput({ priority: 4 }));
    await h.events.waitFor(() => h.gate.waitingCount === 1, "the first task to run");
    const batch = await h.call("solo", "POST", "/v1/async/task/batch", [
      taskInput({ priority: 2 }),
      taskInput({ priority: 9 }),
      taskInput({ priority: 2 }),
    ]);
    assert.equal(batch.status, 200);
    assert.deepEqual(await statusOf(h, "solo"), {
      success: true,
      queuedTasks: 3,
      processingTasks: 1,
      priorityBreakdown: [{ priority: 9, count: 1 }, { priority: 2, count: 2 }],
      concurrency: { used: 1, max: 1 },
    });
    const acme = await statusOf(h, "acme");
    assert.equal(acme.queuedTasks, 0, "status is per account");
    assert.deepEqual(acme.concurrency, { used: 0, max: 4 });
  });
});

Deno.test("DELETE /v1/async/queue deletes the QUEUED tasks and leaves PROCESSING ones running", async () => {
  await withHarness(async (h) => {
    const running = await submit(h, "solo");
    await h.events.waitFor(() => h.gate.waitingCount === 1, "the first task to run");
    const queued = [await submit(h, "solo"), await submit(h, "solo", taskInput({ priority: 8 }))];
    const theirs = await submit(h, "acme");

    const reply = await h.call("solo", "DELETE", "/v1/async/queue");
    assert.equal(reply.status, 200);
    assert.deepEqual(reply.body, { success: true, cleared: 2 });
    const status = await statusOf(h, "solo");
    assert.equal(status.queuedTasks, 0);
    assert.equal(status.processingTasks, 1);
    for (const task of queued) {
      assert.equal((await h.call("solo", "GET", `/v1/async/task/${task.id}`)).status, 404);
    }
    assert.equal(h.store.get(theirs.id)?.accountId, "acme", "other accounts are untouched");

    h.gate.open();
    await h.settled();
    const finished = await h.call("solo", "GET", `/v1/async/task/${running.id}`);
    assert.equal(GetReplySchema.parse(finished.body).task.status, "COMPLETED");

    const again = await h.call("solo", "DELETE", "/v1/async/queue");
    assert.deepEqual(again.body, { success: true, cleared: 0 });
  });
});

Deno.test("every /v1/async route carries X-RateLimit-* headers and answers 429 when over the rate", async () => {
  await withHarness(async (h) => {
    const task = await submit(h, "acme");
    const routes: [string, string, unknown][] = [
      ["POST", "/v1/async/task", taskInput()],
      ["POST", "/v1/async/task/batch", [taskInput()]],
      ["GET", `/v1/async/task/${task.id}`, undefined],
      ["GET", "/v1/async/status", undefined],
      ["DELETE", "/v1/async/queue", undefined],
    ];
    let remaining = 5;
    for (const [method, path, body] of routes) {
      const reply = await h.call("tight", method, path, body);
      remaining--;
      assert.ok(reply.status !== 429, `${method} ${path}: ${JSON.stringify(reply.body)}`);
      assert.equal(reply.headers.get("x-ratelimit-limit"), "5", `${method} ${path}`);
      assert.equal(reply.headers.get("x-ratelimit-remaining"), String(remaining));
    }
    for (const [method, path, body] of routes) {
      const reply = await h.call("tight", method, path, body);
      assert.equal(reply.status, 429, `${method} ${path}`);
      assert.equal(errorOf(reply).code, "RATE_LIMIT_EXCEEDED");
      assert.equal(reply.headers.get("x-ratelimit-remaining"), "0");
      assert.match(reply.headers.get("retry-after") ?? "", /^\d+$/);
    }
    assert.equal(h.store.queuedCount("tight") + h.store.processingCount("tight"), 2);

    h.clock.advance(60_000);
    const later = await h.call("tight", "GET", "/v1/async/status");
    assert.equal(later.status, 200, "the window moves on");
  });
});
