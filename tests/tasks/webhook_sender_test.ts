/**
 * Webhook delivery (SPEC §5) against real receivers on 127.0.0.1:0 that
 * verify with the `standardwebhooks` library exactly as a customer would:
 * signing, retries with a stable id, final failure, timeouts, the concurrency
 * bound, SSRF refusals before any request, and clean shutdown. Loopback needs
 * `allowPrivate: true`, except in the tests that check it is refused.
 */

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { Webhook } from "standardwebhooks";
import type { WebhookState } from "../../src/tasks/task.ts";
import { signWebhook, webhookHeaders } from "../../src/tasks/webhook_signature.ts";
import { WebhookSender, type WebhookSenderOptions } from "../../src/tasks/webhook_sender.ts";
import { FakeClock, serveOnLoopback, type TestServer } from "../_helpers.ts";

// The published Standard Webhooks / Svix test vector.
const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const BODY = JSON.stringify({ id: "task-1", status: "COMPLETED", result: { answer: 42 } });
const FAST_RETRIES = [20, 40, 80, 160];

/** What the receiver saw in one request. */
interface Received {
  path: string;
  headers: Record<string, string>;
  body: string;
  verified: boolean;
}

/** A loopback receiver that verifies like a customer and answers per `respond`. */
interface Receiver extends TestServer {
  received: Received[];
  /** Resolves when the receiver has seen `count` requests. */
  requests(count: number): Promise<void>;
}

function startReceiver(
  respond: (received: Received, request: Request) => Response | Promise<Response>,
  secret = SECRET,
): Receiver {
  const received: Received[] = [];
  const waiters: { count: number; resolve: () => void }[] = [];
  const server = serveOnLoopback(async (request) => {
    const body = await request.text();
    const headers = Object.fromEntries(request.headers);
    const seen = {
      path: new URL(request.url).pathname,
      headers,
      body,
      verified: verifies(secret, body, headers),
    };
    received.push(seen);
    for (const waiter of waiters.filter((w) => received.length >= w.count)) waiter.resolve();
    return await respond(seen, request);
  });
  return {
    ...server,
    received,
    requests(count) {
      if (received.length >= count) return Promise.resolve();
      const { promise, resolve } = Promise.withResolvers<void>();
      waiters.push({ count, resolve });
      return promise;
    },
  };
}

/** A receiver that answers nothing until `release()` (call it before `close()`). */
function startHangingReceiver(): { receiver: Receiver; release: () => void } {
  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  const receiver = startReceiver(async () => {
    await released;
    return new Response(null, { status: 204 });
  });
  return { receiver, release };
}

function verifies(secret: string, body: string, headers: Record<string, string>): boolean {
  try {
    new Webhook(secret).verify(body, headers);
    return true;
  } catch {
    return false;
  }
}

/** A customer's answer: 204 when the signature checks out, 400 when not. */
function acknowledge(received: Received): Response {
  return new Response(null, { status: received.verified ? 204 : 400 });
}

/** Collects `onUpdate` calls; tests wait on them as events. */
class Updates {
  readonly all: { taskId: string; state: WebhookState }[] = [];
  /** Runs after each update is recorded. */
  onEach: () => void = () => {};
  #waiters: { until: () => boolean; resolve: () => void }[] = [];

  onUpdate = (taskId: string, state: WebhookState): void => {
    this.all.push({ taskId, state });
    this.onEach();
    const ready = this.#waiters.filter((waiter) => waiter.until());
    this.#waiters = this.#waiters.filter((waiter) => !ready.includes(waiter));
    for (const waiter of ready) waiter.resolve();
  };

  /** Resolves once `until()` holds after some update. */
  waitFor(until: () => boolean): Promise<void> {
    if (until()) return Promise.resolve();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#waiters.push({ until, resolve });
    return promise;
  }

  of(taskId: string): WebhookState[] {
    return this.all.filter((update) => update.taskId === taskId).map((update) => update.state);
  }

  last(taskId: string): WebhookState | undefined {
    return this.of(taskId).at(-1);
  }
}

/** A sender with a clock near wall time, since receivers reject stale timestamps. */
function makeSender(
  options: Partial<WebhookSenderOptions> = {},
): { sender: WebhookSender; updates: Updates; clock: FakeClock } {
  const clock = new FakeClock(Date.now());
  const updates = new Updates();
  const sender = new WebhookSender({
    clock,
    retryDelaysMs: FAST_RETRIES,
    jitter: 0,
    allowPrivate: true,
    onUpdate: updates.onUpdate,
    ...options,
  });
  return { sender, updates, clock };
}

Deno.test("signWebhook() matches the published vector and an independent HMAC", async () => {
  const messageId = "msg_p5jXN8AQM9LWM0D4loKWxJek";
  const timestampSeconds = 1614265330;
  const body = '{"test": 2432232314}';
  const key = Buffer.from(SECRET.slice("whsec_".length), "base64");
  const expected = createHmac("sha256", key)
    .update(`${messageId}.${timestampSeconds}.${body}`)
    .digest("base64");
  const signature = await signWebhook(SECRET, messageId, timestampSeconds, body);
  assert.equal(signature, `v1,${expected}`);
  assert.equal(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
});

Deno.test("signWebhook() refuses a secret that is not base64 and a fractional timestamp", async () => {
  await assert.rejects(signWebhook("whsec_!!!", "msg_1", 1, "{}"), TypeError);
  await assert.rejects(signWebhook("whsec_", "msg_1", 1, "{}"), TypeError);
  await assert.rejects(signWebhook(SECRET, "msg_1", 1.5, "{}"), RangeError);
});

Deno.test("webhookHeaders() sets id, timestamp, JSON type, and a signature only with a secret", async () => {
  const message = { id: "msg_t1", timestampSeconds: 1_700_000_000, body: "{}" };
  const signed = await webhookHeaders(SECRET, message);
  assert.deepEqual(signed, {
    "content-type": "application/json",
    "webhook-id": "msg_t1",
    "webhook-timestamp": "1700000000",
    "webhook-signature": await signWebhook(SECRET, "msg_t1", 1_700_000_000, "{}"),
  });
  const unsigned = await webhookHeaders(undefined, message);
  assert.equal("webhook-signature" in unsigned, false);
  assert.equal(unsigned["webhook-id"], "msg_t1");
});

Deno.test("WebhookSender delivers a body a Standard Webhooks receiver verifies", async () => {
  const receiver = startReceiver(acknowledge);
  const { sender, updates, clock } = makeSender();
  try {
    sender.enqueue({ taskId: "t1", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    assert.equal(sender.pendingCount, 1);
    await sender.idle();
    assert.equal(receiver.received.length, 1);
    const [request] = receiver.received;
    assert.equal(request?.verified, true);
    assert.equal(request?.body, BODY);
    assert.equal(request?.headers["webhook-id"], "msg_t1");
    assert.equal(request?.headers["content-type"], "application/json");
    assert.equal(request?.headers["webhook-timestamp"], String(Math.floor(clock.nowMs() / 1000)));
    assert.deepEqual(updates.of("t1"), [{
      url: `${receiver.url}/hook`,
      delivered: true,
      deliveredAt: new Date(clock.nowMs()).toISOString(),
      attempts: 1,
    }]);
    assert.equal(sender.pendingCount, 0);
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender retries after 500s and delivers on the third attempt under the same id", async () => {
  const receiver = startReceiver((received) =>
    receiver.received.length <= 2 ? new Response("busy", { status: 500 }) : acknowledge(received)
  );
  const { sender, updates, clock } = makeSender();
  // Time moves between attempts, so each one must carry a fresh timestamp and signature.
  updates.onEach = () => clock.advance(7_000);
  try {
    sender.enqueue({ taskId: "t2", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    await sender.idle();
    assert.equal(receiver.received.length, 3);
    assert.ok(receiver.received.every((request) => request.verified));
    const ids = receiver.received.map((request) => request.headers["webhook-id"]);
    assert.deepEqual(ids, ["msg_t2", "msg_t2", "msg_t2"]);
    const timestamps = receiver.received.map((request) => request.headers["webhook-timestamp"]);
    assert.equal(new Set(timestamps).size, 3);
    const signatures = receiver.received.map((request) => request.headers["webhook-signature"]);
    assert.equal(new Set(signatures).size, 3);
    const states = updates.of("t2");
    assert.deepEqual(states.map((s) => [s.attempts, s.delivered, s.lastError]), [
      [1, false, "HTTP 500"],
      [2, false, "HTTP 500"],
      [3, true, undefined],
    ]);
    assert.ok(states.slice(0, 2).every((s) => s.nextAttemptAt !== undefined && !s.failed));
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender gives up after 5 attempts against a receiver that always fails", async () => {
  const receiver = startReceiver(() => new Response("nope", { status: 503 }));
  const { sender, updates, clock } = makeSender();
  try {
    sender.enqueue({ taskId: "t3", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    await sender.idle();
    assert.equal(receiver.received.length, 5);
    const states = updates.of("t3");
    assert.deepEqual(states.map((s) => s.attempts), [1, 2, 3, 4, 5]);
    assert.deepEqual(
      states.slice(0, 4).map((s) => s.nextAttemptAt),
      FAST_RETRIES.map((delayMs) => new Date(clock.nowMs() + delayMs).toISOString()),
    );
    assert.deepEqual(states.at(-1), {
      url: `${receiver.url}/hook`,
      delivered: false,
      deliveredAt: null,
      attempts: 5,
      lastError: "HTTP 503",
      failed: true,
    });
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender counts a receiver that never answers as a timed-out attempt", async () => {
  const { receiver, release } = startHangingReceiver();
  const { sender, updates } = makeSender({ timeoutMs: 50, retryDelaysMs: [10] });
  try {
    sender.enqueue({ taskId: "t4", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    await sender.idle();
    assert.equal(receiver.received.length, 2);
    assert.deepEqual(updates.of("t4").map((s) => [s.attempts, s.lastError, s.failed]), [
      [1, "timed out after 50 ms", undefined],
      [2, "timed out after 50 ms", true],
    ]);
  } finally {
    await sender.stop();
    release();
    await receiver.close();
  }
});

Deno.test("WebhookSender retries a refused connection, then fails", async () => {
  const gone = startReceiver(acknowledge);
  await gone.close();
  const { sender, updates } = makeSender({ retryDelaysMs: [5, 5] });
  try {
    sender.enqueue({ taskId: "t5", url: `${gone.url}/hook`, secret: SECRET, body: BODY });
    await sender.idle();
    const states = updates.of("t5");
    assert.deepEqual(states.map((s) => s.attempts), [1, 2, 3]);
    assert.equal(states.at(-1)?.failed, true);
    assert.ok(states.every((s) => s.lastError !== undefined && s.lastError.length > 0));
  } finally {
    await sender.stop();
  }
});

Deno.test("WebhookSender never has more than `concurrency` requests in flight", async () => {
  const concurrency = 2;
  let current = 0;
  let most = 0;
  let held: (() => void)[] = [];
  const receiver = startReceiver(async () => {
    current += 1;
    most = Math.max(most, current);
    const { promise, resolve } = Promise.withResolvers<void>();
    held.push(resolve);
    if (current >= concurrency) {
      // Hold the full batch briefly: an attempt beyond the bound would show up meanwhile.
      const batch = held;
      held = [];
      setTimeout(() => batch.forEach((release) => release()), 25);
    }
    await promise;
    current -= 1;
    return new Response(null, { status: 200 });
  });
  const { sender, updates } = makeSender({ concurrency });
  try {
    for (let i = 0; i < 6; i += 1) {
      sender.enqueue({ taskId: `c${i}`, url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    }
    assert.equal(sender.pendingCount, 6);
    await sender.idle();
    assert.equal(receiver.received.length, 6);
    assert.equal(most, concurrency);
    assert.equal(updates.all.filter((u) => u.state.delivered).length, 6);
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender refuses private targets before any request unless allowed", async () => {
  const receiver = startReceiver(acknowledge);
  const port = new URL(receiver.url).port;
  const asked: string[] = [];
  const resolve = (hostname: string) => {
    asked.push(hostname);
    return Promise.resolve(["127.0.0.1"]);
  };
  const { sender, updates } = makeSender({ allowPrivate: false, resolve });
  const urls = {
    literal: `${receiver.url}/hook`,
    localhost: `http://localhost:${port}/hook`,
    v6: `http://[::1]:${port}/hook`,
    mapped: `http://[::ffff:127.0.0.1]:${port}/hook`,
    resolved: `http://receiver.test:${port}/hook`,
    scheme: `ftp://127.0.0.1:${port}/hook`,
  };
  try {
    for (const [taskId, url] of Object.entries(urls)) {
      sender.enqueue({ taskId, url, secret: SECRET, body: BODY });
    }
    await sender.idle();
    assert.equal(receiver.received.length, 0);
    assert.deepEqual(asked, ["receiver.test"]);
    for (const [taskId, url] of Object.entries(urls)) {
      const states = updates.of(taskId);
      assert.equal(states.length, 1, taskId);
      assert.equal(states[0]?.url, url);
      assert.equal(states[0]?.failed, true, taskId);
      assert.equal(states[0]?.attempts, 0, taskId);
      assert.match(states[0]?.lastError ?? "", /^refused: /, taskId);
    }
    assert.equal(
      updates.last("resolved")?.lastError,
      "refused: receiver.test resolves to private address 127.0.0.1",
    );
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender retries a failed DNS lookup like a connection error", async () => {
  const resolve = (hostname: string) => Promise.reject(new Error(`NXDOMAIN ${hostname}`));
  const { sender, updates } = makeSender({ allowPrivate: false, resolve, retryDelaysMs: [5] });
  try {
    sender.enqueue({ taskId: "d1", url: "https://nowhere.test/hook", secret: SECRET, body: BODY });
    await sender.idle();
    assert.deepEqual(updates.of("d1").map((s) => [s.attempts, s.lastError, s.failed]), [
      [1, "NXDOMAIN nowhere.test", undefined],
      [2, "NXDOMAIN nowhere.test", true],
    ]);
  } finally {
    await sender.stop();
  }
});

Deno.test("WebhookSender does not follow redirects", async () => {
  const receiver = startReceiver((received) =>
    received.path === "/hook"
      ? new Response(null, { status: 302, headers: { location: "/elsewhere" } })
      : acknowledge(received)
  );
  const { sender, updates } = makeSender({ retryDelaysMs: [] });
  try {
    sender.enqueue({ taskId: "r1", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    await sender.idle();
    assert.deepEqual(receiver.received.map((request) => request.path), ["/hook"]);
    assert.equal(updates.last("r1")?.lastError, "HTTP 302");
    assert.equal(updates.last("r1")?.failed, true);
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender sends without webhook-signature when the account has no secret", async () => {
  const receiver = startReceiver(() => new Response("ok"));
  const { sender, updates } = makeSender();
  try {
    sender.enqueue({ taskId: "u1", url: `${receiver.url}/hook`, secret: undefined, body: BODY });
    await sender.idle();
    const headers = receiver.received[0]?.headers ?? {};
    assert.equal(headers["webhook-id"], "msg_u1");
    assert.ok(headers["webhook-timestamp"]);
    assert.equal("webhook-signature" in headers, false);
    assert.equal(updates.last("u1")?.delivered, true);
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender fails at once, sending nothing, when the secret cannot sign", async () => {
  const receiver = startReceiver(acknowledge);
  const { sender, updates } = makeSender();
  try {
    sender.enqueue({ taskId: "s1", url: `${receiver.url}/hook`, secret: "whsec_***", body: BODY });
    await sender.idle();
    assert.equal(receiver.received.length, 0);
    assert.equal(updates.last("s1")?.failed, true);
    assert.match(updates.last("s1")?.lastError ?? "", /^cannot sign: /);
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender spreads retry delays by the jitter fraction", async () => {
  const receiver = startReceiver(() => new Response(null, { status: 500 }));
  const draws = [0, 0.75];
  const { sender, updates, clock } = makeSender({
    retryDelaysMs: [20, 40],
    jitter: 0.5,
    random: () => draws.shift() ?? 0.5,
  });
  try {
    sender.enqueue({ taskId: "j1", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    await sender.idle();
    assert.deepEqual(updates.of("j1").map((s) => s.nextAttemptAt), [
      new Date(clock.nowMs() + 10).toISOString(), // 20 × (1 − 0.5)
      new Date(clock.nowMs() + 50).toISOString(), // 40 × (1 + 0.5 × 0.5)
      undefined,
    ]);
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender resumes a delivery's attempt count", async () => {
  const receiver = startReceiver(() => new Response(null, { status: 500 }));
  const { sender, updates } = makeSender({ retryDelaysMs: [5, 5, 5, 5] });
  try {
    sender.enqueue({
      taskId: "p1",
      url: `${receiver.url}/hook`,
      secret: SECRET,
      body: BODY,
      attempts: 3,
    });
    await sender.idle();
    assert.equal(receiver.received.length, 2);
    assert.deepEqual(updates.of("p1").map((s) => s.attempts), [4, 5]);
    assert.equal(updates.last("p1")?.failed, true);
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender.enqueue() returns before the receiver has answered", async () => {
  const { promise: release, resolve: open } = Promise.withResolvers<void>();
  const receiver = startReceiver(async () => {
    await release;
    return new Response(null, { status: 204 });
  });
  const { sender, updates } = makeSender();
  try {
    sender.enqueue({ taskId: "n1", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    await receiver.requests(1);
    assert.equal(updates.all.length, 0);
    assert.equal(sender.pendingCount, 1);
    open();
    await sender.idle();
    assert.equal(updates.last("n1")?.delivered, true);
  } finally {
    await sender.stop();
    await receiver.close();
  }
});

Deno.test("WebhookSender.stop() aborts attempts in flight and reports nothing for them", async () => {
  const { receiver, release } = startHangingReceiver();
  const { sender, updates } = makeSender({ timeoutMs: 60_000 });
  try {
    sender.enqueue({ taskId: "h1", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    sender.enqueue({ taskId: "h2", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    await receiver.requests(2);
    const idle = sender.idle();
    await sender.stop();
    await idle;
    assert.equal(sender.pendingCount, 0);
    assert.deepEqual(updates.all, []);
    sender.enqueue({ taskId: "h3", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    assert.equal(sender.pendingCount, 0);
  } finally {
    await sender.stop();
    release();
    await receiver.close();
  }
});

Deno.test("WebhookSender.stop() cancels scheduled retries", async () => {
  const receiver = startReceiver(() => new Response(null, { status: 500 }));
  const { sender, updates } = makeSender({ retryDelaysMs: [60_000] });
  try {
    sender.enqueue({ taskId: "w1", url: `${receiver.url}/hook`, secret: SECRET, body: BODY });
    await updates.waitFor(() => updates.all.length === 1);
    assert.equal(updates.last("w1")?.nextAttemptAt !== undefined, true);
    assert.equal(sender.pendingCount, 1);
    await sender.stop();
    assert.equal(sender.pendingCount, 0);
    await sender.idle();
    assert.equal(receiver.received.length, 1);
  } finally {
    await sender.stop();
    await receiver.close();
  }
});
