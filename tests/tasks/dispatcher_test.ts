/**
 * The dispatcher (SPEC §5) end to end through HTTP: queued tasks run inside
 * the very plan slots sync monitor calls use, highest priority first and FIFO
 * within a priority, exactly as many at once as the account has free slots;
 * upstream 5xx is retried, 4xx fails at once; finished tasks with a webhook
 * are delivered, signed per Standard Webhooks, to a real loopback receiver
 * that verifies with the `standardwebhooks` library.
 */

import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import type { PlansFile } from "../../src/plans/schema.ts";
import { buildSnapshot } from "../../src/plans/snapshot.ts";
import { HttpProxy } from "../../src/upstream/proxy.ts";
import { plansDocument, serveOnLoopback, type TestServer } from "../_helpers.ts";
import {
  errorOf,
  GetReplySchema,
  type Harness,
  type HarnessOptions,
  startHarness,
  SubmitReplySchema,
  taskInput,
  TaskViewSchema,
} from "./_harness.ts";

const PLANS: PlansFile["plans"] = {
  solo: { concurrency: 1 },
  quad: { concurrency: 4 },
};
const ACCOUNTS = { solo: "solo", quad: "quad" };
// The published Standard Webhooks / Svix test secret.
const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

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

async function submit(h: Harness, account: string, input = taskInput()): Promise<string> {
  const reply = await h.call(account, "POST", "/v1/async/task", input);
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  return SubmitReplySchema.parse(reply.body).task.id;
}

async function view(h: Harness, account: string, id: string) {
  const reply = await h.call(account, "GET", `/v1/async/task/${id}`);
  assert.equal(reply.status, 200, JSON.stringify(reply.body));
  return GetReplySchema.parse(reply.body).task;
}

Deno.test("a 1-slot account: while a task is PROCESSING, a sync monitor call gets 429 CONCURRENCY_LIMIT_EXCEEDED", async () => {
  await withHarness(async (h) => {
    const id = await submit(h, "solo");
    await h.events.waitFor(() => h.gate.waitingCount === 1, "the task to run");
    assert.equal(h.store.get(id)?.status, "PROCESSING");
    assert.equal(h.limiter.slotsInUse("solo"), 1);

    const sync = await h.call("solo", "POST", "/v1/monitor/chatgpt", { prompt: "now please" });
    assert.equal(sync.status, 429);
    const error = errorOf(sync);
    assert.equal(error.code, "CONCURRENCY_LIMIT_EXCEEDED");
    assert.equal(error.details?.limit, 1);
    assert.equal(h.gate.calls, 1, "the refused call never reached the upstream");

    h.gate.open();
    await h.settled();
    assert.equal(h.limiter.slotsInUse("solo"), 0);
    const after = await h.call("solo", "POST", "/v1/monitor/chatgpt", { prompt: "now please" });
    assert.equal(after.status, 200, "the slot is free again");
  });
});

Deno.test("a queued task waits while a sync call holds the only slot and starts when it is given back", async () => {
  await withHarness(async (h) => {
    const sync = h.call("solo", "POST", "/v1/monitor/chatgpt", { prompt: "sync first" });
    await h.events.waitFor(() => h.gate.waitingCount === 1, "the sync call to reach upstream");
    const id = await submit(h, "solo");
    assert.equal(h.store.get(id)?.status, "QUEUED", "no free slot: the task waits");
    assert.equal(h.gate.calls, 1);

    h.gate.release(1);
    assert.equal((await sync).status, 200);
    // The sync response body is sent, its lease released: that event starts the task.
    await h.events.waitFor(() => h.gate.waitingCount === 1, "the task to start");
    assert.equal(h.store.get(id)?.status, "PROCESSING");
    h.gate.open();
    await h.settled();
    assert.equal(h.store.get(id)?.status, "COMPLETED");
  });
});

Deno.test("tasks queued behind the only slot run highest priority first, FIFO within a priority", async () => {
  await withHarness(async (h) => {
    const blocker = await submit(h, "solo", taskInput({ priority: 1 }));
    await h.events.waitFor(() => h.gate.waitingCount === 1, "the first task to run");
    const p1 = await submit(h, "solo", taskInput({ priority: 1 }));
    const p10 = await submit(h, "solo", taskInput({ priority: 10 }));
    const p5 = await submit(h, "solo", taskInput({ priority: 5 }));
    const p5b = await submit(h, "solo", taskInput({ priority: 5 }));

    h.gate.open();
    await h.settled();
    assert.deepEqual(h.store.finishedIds, [blocker, p10, p5, p5b, p1]);
    for (const id of h.store.finishedIds) {
      assert.equal((await view(h, "solo", id)).status, "COMPLETED");
    }
  });
});

Deno.test("an account runs exactly as many tasks at once as it has free slots, no more, no less", async () => {
  await withHarness(async (h) => {
    const batch = await h.call(
      "quad",
      "POST",
      "/v1/async/task/batch",
      Array.from({ length: 10 }, () => taskInput()),
    );
    assert.equal(batch.status, 200);
    await h.events.waitFor(() => h.gate.waitingCount === 4, "four tasks to run");
    assert.equal(h.store.processingCount("quad"), 4);
    assert.equal(h.store.queuedCount("quad"), 6);
    assert.equal(h.limiter.slotsInUse("quad"), 4);

    for (let finished = 1; finished <= 6; finished++) {
      h.gate.release(1);
      await h.events.waitFor(
        () => h.gate.calls === 4 + finished && h.gate.waitingCount === 4,
        `task ${finished} to be replaced`,
      );
      assert.equal(h.store.processingCount("quad"), 4);
      assert.equal(h.limiter.slotsInUse("quad"), 4);
    }
    h.gate.open();
    await h.settled();
    assert.equal(h.store.count("COMPLETED", "quad"), 10);
    assert.equal(h.limiter.slotsInUse("quad"), 0);
  });
});

Deno.test("a plan change that adds slots starts queued tasks at once", async () => {
  await withHarness(async (h) => {
    for (let i = 0; i < 5; i++) await submit(h, "solo");
    await h.events.waitFor(() => h.gate.waitingCount === 1, "one task to run");

    const built = buildSnapshot(
      plansDocument({ ...PLANS, solo: { concurrency: 3 } }, ACCOUNTS),
      new Date(h.clock.nowMs()),
    );
    assert.ok(built.ok);
    h.config.replace(built.snapshot, "test");
    await h.events.waitFor(() => h.gate.waitingCount === 3, "the new slots to fill");
    assert.equal(h.limiter.slotsInUse("solo"), 3);
    h.gate.open();
    await h.settled();
  });
});

/** A loopback upstream whose answer each task picks with `payload.mode`. */
function startUpstream(): TestServer & { hits: Map<string, number> } {
  const hits = new Map<string, number>();
  const server = serveOnLoopback(async (request) => {
    const id = request.headers.get("x-request-id") ?? "";
    const hit = (hits.get(id) ?? 0) + 1;
    hits.set(id, hit);
    const { mode } = await request.json();
    if (mode === "flaky" && hit <= 2) return new Response("overloaded", { status: 503 });
    if (mode === "down") return new Response("broken", { status: 500 });
    if (mode === "bad") return Response.json({ message: "bad prompt" }, { status: 422 });
    return Response.json({ success: true, answer: `ok on hit ${hit}` });
  });
  return { ...server, hits };
}

Deno.test("upstream 5xx is retried (COMPLETED on the 3rd attempt, FAILED after 5); 4xx fails at once; slots come back", async () => {
  const upstream = startUpstream();
  try {
    await withHarness(async (h) => {
      const flaky = await submit(h, "quad", taskInput({ payload: { mode: "flaky" } }));
      const down = await submit(h, "quad", taskInput({ payload: { mode: "down" } }));
      const bad = await submit(h, "quad", taskInput({ payload: { mode: "bad" } }));
      await h.settled();

      const completed = await view(h, "quad", flaky);
      assert.equal(completed.status, "COMPLETED");
      assert.equal(completed.attempts, 3);
      assert.deepEqual(completed.result, { success: true, answer: "ok on hit 3" });
      assert.equal(completed.error, undefined);

      const failed = await view(h, "quad", down);
      assert.equal(failed.status, "FAILED");
      assert.equal(failed.attempts, 5);
      assert.equal(failed.result, undefined);
      assert.deepEqual(failed.error, { code: "UPSTREAM_ERROR", message: "upstream answered 500" });

      const rejected = await view(h, "quad", bad);
      assert.equal(rejected.status, "FAILED");
      assert.equal(rejected.attempts, 1);
      assert.equal(rejected.error?.code, "UPSTREAM_ERROR");
      assert.match(rejected.error?.message ?? "", /422/);

      assert.deepEqual(
        [flaky, down, bad].map((id) => upstream.hits.get(id)),
        [3, 5, 1],
        "what the upstream saw",
      );
      assert.equal(h.limiter.slotsInUse("quad"), 0);
      assert.equal(h.limiter.leases.heldCount, 0);
    }, { forwarder: () => new HttpProxy(upstream.url, { timeoutMs: 5000 }) });
  } finally {
    await upstream.close();
  }
});

Deno.test("an unreachable upstream is retried like a 5xx and the task FAILS with UPSTREAM_ERROR", async () => {
  // A port nobody listens on: take one, then close it.
  const closed = serveOnLoopback(() => new Response("x"));
  const url = closed.url;
  await closed.close();
  await withHarness(async (h) => {
    const id = await submit(h, "quad");
    await h.settled();
    const task = await view(h, "quad", id);
    assert.equal(task.status, "FAILED");
    assert.equal(task.attempts, 5);
    assert.equal(task.error?.code, "UPSTREAM_ERROR");
    assert.equal(h.limiter.slotsInUse("quad"), 0);
  }, { forwarder: () => new HttpProxy(url, { timeoutMs: 5000 }) });
});

/** What a webhook receiver saw. */
interface Delivery {
  headers: Record<string, string>;
  body: string;
  verified: boolean;
}

/** A loopback receiver that verifies like a customer; `answer(n)` picks the status of request n. */
function startReceiver(
  answer: (n: number) => number | Promise<number>,
  onRequest: () => void,
): TestServer & { deliveries: Delivery[] } {
  const deliveries: Delivery[] = [];
  const server = serveOnLoopback(async (request) => {
    const body = await request.text();
    const headers = Object.fromEntries(request.headers);
    let verified = false;
    try {
      new Webhook(SECRET).verify(body, headers);
      verified = true;
    } catch {
      verified = false;
    }
    deliveries.push({ headers, body, verified });
    onRequest();
    const status = await answer(deliveries.length);
    return new Response(null, { status: verified ? status : 401 });
  });
  return { ...server, deliveries };
}

const WEBHOOK_OPTIONS: Partial<HarnessOptions> = {
  gateOpen: true,
  allowPrivateWebhooks: true,
  webhookRetryDelaysMs: [5, 10, 20, 40],
  webhookSecrets: { quad: SECRET },
};

Deno.test("a finished task is POSTed, signed with the account's whsec secret, as its final representation", async () => {
  let notify = () => {};
  const receiver = startReceiver(() => 204, () => notify());
  try {
    await withHarness(async (h) => {
      notify = () => h.events.notify();
      const url = `${receiver.url}/hooks/sluice`;
      const id = await submit(
        h,
        "quad",
        taskInput({ payload: { prompt: "webhook me" }, webhook: { url } }),
      );
      await h.events.waitFor(() => h.store.get(id)?.webhook?.delivered === true, "delivery");
      await h.sender?.idle();

      assert.equal(receiver.deliveries.length, 1);
      const [delivery] = receiver.deliveries;
      assert.ok(delivery?.verified, "standardwebhooks verifies the signature");
      assert.equal(delivery.headers["webhook-id"], `msg_${id}`);
      assert.match(delivery.headers["content-type"] ?? "", /^application\/json/);
      const sent = TaskViewSchema.parse(JSON.parse(delivery.body));
      assert.equal(sent.id, id);
      assert.equal(sent.status, "COMPLETED");
      assert.match(JSON.stringify(sent.result), /webhook me/);
      assert.equal(sent.webhook?.url, url);

      const shown = await view(h, "quad", id);
      assert.deepEqual(shown.webhook, {
        url,
        delivered: true,
        deliveredAt: new Date(h.clock.nowMs()).toISOString(),
        attempts: 1,
      });
    }, WEBHOOK_OPTIONS);
  } finally {
    await receiver.close();
  }
});

Deno.test("a receiver that fails twice gets the webhook on the 3rd attempt; the task shows attempts: 3", async () => {
  let notify = () => {};
  const receiver = startReceiver((n) => (n <= 2 ? 500 : 200), () => notify());
  try {
    await withHarness(async (h) => {
      notify = () => h.events.notify();
      const url = `${receiver.url}/flaky`;
      const id = await submit(h, "quad", taskInput({ webhook: { url } }));
      await h.events.waitFor(() => h.store.get(id)?.webhook?.delivered === true, "delivery");
      await h.sender?.idle();

      assert.equal(receiver.deliveries.length, 3);
      assert.ok(receiver.deliveries.every((d) => d.verified), "every attempt is signed");
      const ids = new Set(receiver.deliveries.map((d) => d.headers["webhook-id"]));
      assert.deepEqual([...ids], [`msg_${id}`], "one webhook-id across attempts");
      const shown = await view(h, "quad", id);
      assert.equal(shown.status, "COMPLETED");
      assert.deepEqual(shown.webhook, {
        url,
        delivered: true,
        deliveredAt: new Date(h.clock.nowMs()).toISOString(),
        attempts: 3,
      });
    }, WEBHOOK_OPTIONS);
  } finally {
    await receiver.close();
  }
});

Deno.test("a FAILED task's webhook carries its error, and a slow receiver never holds up dispatch", async () => {
  const { promise: released, resolve: release } = Promise.withResolvers<number>();
  let notify = () => {};
  const receiver = startReceiver(() => released, () => notify());
  try {
    await withHarness(async (h) => {
      notify = () => h.events.notify();
      const url = `${receiver.url}/slow`;
      const hooked = await submit(h, "quad", taskInput({ taskType: "GROK", webhook: { url } }));
      await h.events.waitFor(() => receiver.deliveries.length === 1, "the webhook to arrive");
      // The receiver has not answered; tasks still run and finish meanwhile.
      const later = [await submit(h, "quad"), await submit(h, "quad")];
      await h.events.waitFor(
        () => later.every((id) => h.store.get(id)?.status === "COMPLETED"),
        "later tasks to finish while the webhook is in flight",
      );
      assert.equal(h.store.get(hooked)?.webhook?.delivered, false);
      release(204);
      await h.events.waitFor(() => h.store.get(hooked)?.webhook?.delivered === true, "delivery");
      await h.sender?.idle();
      const sent = TaskViewSchema.parse(JSON.parse(receiver.deliveries[0]?.body ?? "null"));
      assert.equal(sent.status, "FAILED");
      assert.equal(sent.error?.code, "UPSTREAM_ERROR");
      assert.equal(sent.attempts, 1);
    }, {
      ...WEBHOOK_OPTIONS,
      // GROK answers 400 here, so the hooked task FAILS at once.
      forwarder: (simulator) => ({
        servesAnyPath: false,
        forward: (request, context) =>
          request.url.endsWith("/grok")
            ? Promise.resolve(new Response("no", { status: 400 }))
            : simulator.forward(request, context),
      }),
    });
  } finally {
    release(204);
    await receiver.close();
  }
});
