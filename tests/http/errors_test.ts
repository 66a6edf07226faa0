/**
 * The gateway's HTTP contract that needs no socket (SPEC §§2-4): the error
 * envelope and codes, request ids, rate headers, the sliding window seen
 * through HTTP, shadow mode, and the service routes. Everything runs through
 * `app.request()` with a fake clock, so windows are exact.
 */

import assert from "node:assert/strict";
import { type AppOptions, createApp } from "../../src/http/app.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import type { PlansFile } from "../../src/plans/schema.ts";
import { Simulator } from "../../src/upstream/simulator.ts";
import { FakeClock, makeConfig, testKey } from "../_helpers.ts";

const PLANS: PlansFile["plans"] = {
  basic: { concurrency: 2, rateLimit: { requests: 5, windowMs: 1000 } },
  roomy: { concurrency: 10, rateLimit: { requests: 100, windowMs: 1000 } },
  trial: { concurrency: 1, rateLimit: { requests: 2, windowMs: 1000 }, shadow: true },
};
const ACCOUNTS = { acme: "basic", big: "roomy", shade: "trial" };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const CLIENT_A = { remoteAddr: { transport: "tcp" as const, hostname: "10.0.0.1", port: 1 } };
const CLIENT_B = { remoteAddr: { transport: "tcp" as const, hostname: "10.0.0.2", port: 1 } };

interface Setup {
  app: ReturnType<typeof createApp>;
  clock: FakeClock;
  limiter: Limiter;
  unexpected: unknown[];
}

function setup(options: Partial<AppOptions> = {}): Setup {
  const clock = new FakeClock();
  const limiter = new Limiter({ epochMs: clock.nowMs() });
  const unexpected: unknown[] = [];
  const app = createApp({
    config: makeConfig(PLANS, ACCOUNTS),
    limiter,
    clock,
    forwarder: new Simulator({
      sleep: () => Promise.resolve(),
      random: () => 0.5,
      maxBodyBytes: 1024,
    }),
    maxBodyBytes: 1024,
    onUnexpectedError: (error) => unexpected.push(error),
    ...options,
  });
  return { app, clock, limiter, unexpected };
}

function auth(account: string, extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${testKey(account)}`, ...extra };
}

/** Reads an error response and checks it has exactly the one envelope shape. */
async function assertEnvelope(
  response: Response,
  status: number,
  code: string,
): Promise<Record<string, unknown> | undefined> {
  const body: unknown = await response.json();
  assert.equal(response.status, status, JSON.stringify(body).slice(0, 300));
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  assert.ok(typeof body === "object" && body !== null);
  assert.deepEqual(Object.keys(body).sort(), ["error", "success"]);
  const { success, error } = body as { success: unknown; error: Record<string, unknown> };
  assert.equal(success, false);
  assert.equal(error.code, code);
  assert.equal(typeof error.message, "string");
  assert.ok(String(error.message).length > 0);
  assert.equal(typeof error.timestamp, "string");
  const timestamp = String(error.timestamp);
  assert.equal(new Date(timestamp).toISOString(), timestamp, "timestamp is ISO-8601");
  assert.ok(response.headers.get("x-request-id"), "every response has X-Request-ID");
  assert.match(response.headers.get("x-latency-ms") ?? "", /^\d+$/, "and X-Latency-Ms");
  for (const key of Object.keys(error)) {
    assert.ok(["code", "message", "details", "timestamp"].includes(key), `unexpected ${key}`);
  }
  if ("details" in error) {
    assert.ok(typeof error.details === "object" && error.details !== null);
    return error.details as Record<string, unknown>;
  }
  return undefined;
}

function assertRateHeaders(response: Response, limit: number, remaining: number): void {
  assert.equal(response.headers.get("x-ratelimit-limit"), String(limit));
  assert.equal(response.headers.get("x-ratelimit-remaining"), String(remaining));
}

function assertWholeSeconds(value: string | null, atLeast: number): number {
  assert.match(value ?? "", /^\d+$/);
  const seconds = Number(value);
  assert.ok(seconds >= atLeast, `${value} < ${atLeast}`);
  return seconds;
}

Deno.test("401 MISSING_API_KEY when the Authorization header is absent", async () => {
  const { app } = setup();
  const response = await app.request("/v1/limits");
  await assertEnvelope(response, 401, "MISSING_API_KEY");
  assert.match(response.headers.get("www-authenticate") ?? "", /^Bearer/);
  assert.equal(response.headers.get("x-ratelimit-limit"), null, "not authenticated");
});

Deno.test("401 MISSING_API_KEY for a scheme other than Bearer or an empty Bearer", async () => {
  const { app } = setup();
  for (const header of [`Basic ${btoa("user:pass")}`, `Token ${testKey("acme")}`, "Bearer", ""]) {
    const response = await app.request("/v1/limits", { headers: { authorization: header } });
    await assertEnvelope(response, 401, "MISSING_API_KEY");
  }
});

Deno.test("401 INVALID_API_KEY_FORMAT for keys that are not 16-256 of [A-Za-z0-9_-]", async () => {
  const { app } = setup();
  for (const key of ["short", "has.dot.0123456789abcdef", "x".repeat(257), "ü".repeat(20)]) {
    const response = await app.request("/v1/limits", {
      headers: { authorization: `Bearer ${key}` },
    });
    await assertEnvelope(response, 401, "INVALID_API_KEY_FORMAT");
  }
});

Deno.test("401 INVALID_OR_EXPIRED_API_KEY for a well-formed key nobody owns", async () => {
  const { app } = setup();
  const response = await app.request("/v1/limits", { headers: auth("nobody") });
  await assertEnvelope(response, 401, "INVALID_OR_EXPIRED_API_KEY");
  assert.equal(response.headers.get("x-ratelimit-limit"), null);
});

Deno.test("repeated failed auth from one IP gets 429 before the key is looked at", async () => {
  const { app, clock } = setup({ authFailuresPerMinute: 3 });
  for (let i = 0; i < 3; i++) {
    const response = await app.request("/v1/limits", { headers: auth("nobody") }, CLIENT_A);
    await assertEnvelope(response, 401, "INVALID_OR_EXPIRED_API_KEY");
  }
  const blocked = await app.request("/v1/limits", { headers: auth("acme") }, CLIENT_A);
  const details = await assertEnvelope(blocked, 429, "RATE_LIMIT_EXCEEDED");
  assert.equal(details?.limit, 3);
  const retryAfterSeconds = assertWholeSeconds(blocked.headers.get("retry-after"), 1);
  assert.ok(retryAfterSeconds <= 60);

  const otherClient = await app.request("/v1/limits", { headers: auth("acme") }, CLIENT_B);
  assert.equal(otherClient.status, 200, "another address is not affected");
  await otherClient.body?.cancel();

  clock.advance(60_000);
  const later = await app.request("/v1/limits", { headers: auth("acme") }, CLIENT_A);
  assert.equal(later.status, 200, "the failures leave the window after a minute");
  await later.body?.cancel();
});

Deno.test("404 RESOURCE_NOT_FOUND for an unknown /v1 path when the simulator serves", async () => {
  const { app } = setup();
  const response = await app.request("/v1/nothing/here?x=1", { headers: auth("acme") });
  await assertEnvelope(response, 404, "RESOURCE_NOT_FOUND");
  assertRateHeaders(response, 5, 4);
});

Deno.test("404 RESOURCE_NOT_FOUND for an unknown monitor provider, slot given back", async () => {
  const { app, limiter } = setup();
  const response = await app.request("/v1/monitor/nosuch", {
    method: "POST",
    headers: auth("acme", { "content-type": "application/json" }),
    body: JSON.stringify({ prompt: "x" }),
  });
  const details = await assertEnvelope(response, 404, "RESOURCE_NOT_FOUND");
  assert.ok(Array.isArray(details?.providers));
  assertRateHeaders(response, 5, 4);
  assert.equal(response.headers.get("x-concurrent-limit"), "2");
  assert.equal(limiter.slotsInUse("acme"), 0);
});

Deno.test("404 RESOURCE_NOT_FOUND for an unknown path outside /v1, without auth", async () => {
  const { app } = setup();
  const response = await app.request("/no/such/thing");
  await assertEnvelope(response, 404, "RESOURCE_NOT_FOUND");
  assert.match(response.headers.get("x-request-id") ?? "", UUID);
});

Deno.test("413 PAYLOAD_TOO_LARGE when Content-Length is over maxBodyBytes", async () => {
  const { app, limiter } = setup();
  const response = await app.request("/v1/monitor/chatgpt", {
    method: "POST",
    headers: auth("acme", { "content-type": "application/json", "content-length": "2000" }),
    body: "x".repeat(2000),
  });
  const details = await assertEnvelope(response, 413, "PAYLOAD_TOO_LARGE");
  assert.equal(details?.maxBytes, 1024);
  assertRateHeaders(response, 5, 4);
  assert.equal(limiter.slotsInUse("acme"), 0);
});

Deno.test("413 PAYLOAD_TOO_LARGE for a body without Content-Length that grows too big", async () => {
  const { app, limiter, unexpected } = setup();
  const chunk = new TextEncoder().encode("y".repeat(600));
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(chunk);
      controller.enqueue(chunk);
      controller.close();
    },
  });
  const response = await app.request("/v1/monitor/chatgpt", {
    method: "POST",
    headers: auth("acme"),
    body,
  });
  await assertEnvelope(response, 413, "PAYLOAD_TOO_LARGE");
  assert.equal(limiter.slotsInUse("acme"), 0);
  assert.deepEqual(unexpected, []);
});

Deno.test("429 RATE_LIMIT_EXCEEDED past the limit, with Retry-After and X-RateLimit-Reset", async () => {
  const { app, clock } = setup();
  for (let expected = 4; expected >= 0; expected--) {
    const response = await app.request("/v1/limits", { headers: auth("acme") });
    assert.equal(response.status, 200);
    assertRateHeaders(response, 5, expected);
    await response.body?.cancel();
    clock.advance(100);
  }
  const response = await app.request("/v1/limits", { headers: auth("acme") });
  const details = await assertEnvelope(response, 429, "RATE_LIMIT_EXCEEDED");
  assert.equal(details?.limit, 5);
  assert.equal(details?.windowMs, 1000);
  assertRateHeaders(response, 5, 0);
  const retryAfterSeconds = assertWholeSeconds(response.headers.get("retry-after"), 1);
  assert.equal(retryAfterSeconds, 1, "the oldest request leaves within 1 s");
  assertWholeSeconds(response.headers.get("x-ratelimit-reset"), 1);
  assert.match(response.headers.get("x-request-id") ?? "", UUID);
  assert.match(response.headers.get("x-latency-ms") ?? "", /^\d+$/);
});

Deno.test("the window slides: after windowMs the whole limit is available again", async () => {
  const { app, clock } = setup();
  async function status(): Promise<number> {
    const response = await app.request("/v1/limits", { headers: auth("acme") });
    await response.body?.cancel();
    return response.status;
  }
  for (let i = 0; i < 5; i++) assert.equal(await status(), 200);
  assert.equal(await status(), 429);
  clock.advance(500);
  assert.equal(await status(), 429, "half a window later the five still count");
  clock.advance(500);
  for (let i = 0; i < 5; i++) assert.equal(await status(), 200, `request ${i} after the window`);
  assert.equal(await status(), 429);
});

Deno.test("a request rejected by the rate limit does not count against the window", async () => {
  const { app, clock } = setup();
  async function get(): Promise<Response> {
    const response = await app.request("/v1/limits", { headers: auth("acme") });
    return response;
  }
  for (let i = 0; i < 5; i++) await (await get()).body?.cancel();
  clock.advance(600);
  for (let i = 0; i < 20; i++) {
    const rejected = await get();
    assert.equal(rejected.status, 429);
    await rejected.body?.cancel();
  }
  // The 20 rejections happened 600 ms in; had they counted, they would still
  // fill the window 400 ms later, when the five admitted ones have left.
  clock.advance(400);
  const response = await get();
  assert.equal(response.status, 200);
  assertRateHeaders(response, 5, 4);
  const limits = await response.json();
  assert.equal(limits.rate.used, 1);
});

Deno.test("X-RateLimit-Limit and -Remaining are on every authenticated response", async () => {
  const { app } = setup();
  const ok = await app.request("/v1/limits", { headers: auth("acme") });
  assert.equal(ok.status, 200);
  assertRateHeaders(ok, 5, 4);
  await ok.body?.cancel();
  const monitor = await app.request("/v1/monitor/chatgpt?prompt=hi", {
    method: "POST",
    headers: auth("acme"),
  });
  assert.equal(monitor.status, 200);
  assertRateHeaders(monitor, 5, 3);
  await monitor.body?.cancel();
  const notFound = await app.request("/v1/missing", { headers: auth("acme") });
  assert.equal(notFound.status, 404);
  assertRateHeaders(notFound, 5, 2);
  await notFound.body?.cancel();
  const tooLarge = await app.request("/v1/monitor/chatgpt", {
    method: "POST",
    headers: auth("acme", { "content-length": "5000" }),
    body: "z".repeat(5000),
  });
  assert.equal(tooLarge.status, 413);
  assertRateHeaders(tooLarge, 5, 1);
  await tooLarge.body?.cancel();
  const last = await app.request("/v1/limits", { headers: auth("acme") });
  assertRateHeaders(last, 5, 0);
  await last.body?.cancel();
  const limited = await app.request("/v1/limits", { headers: auth("acme") });
  assert.equal(limited.status, 429);
  assertRateHeaders(limited, 5, 0);
  await limited.body?.cancel();
});

Deno.test("RateLimit-Policy and RateLimit follow draft-11, with a concurrency policy on monitor", async () => {
  const { app } = setup();
  const limits = await app.request("/v1/limits", { headers: auth("acme") });
  await limits.body?.cancel();
  assert.equal(limits.headers.get("ratelimit-policy"), '"requests";q=5;w=1');
  const state = limits.headers.get("ratelimit") ?? "";
  const match = /^"requests";r=(\d+);t=(\d+)$/.exec(state);
  assert.ok(match, state);
  assert.equal(match[1], "4", "r is what X-RateLimit-Remaining says");
  assert.equal(match[2], "1", "t: the oldest request leaves within the 1 s window");

  const monitor = await app.request("/v1/monitor/gemini?prompt=shoes", {
    method: "POST",
    headers: auth("acme"),
  });
  await monitor.body?.cancel();
  assert.equal(monitor.status, 200);
  assert.equal(
    monitor.headers.get("ratelimit-policy"),
    '"requests";q=5;w=1, "concurrency";q=2;qu="concurrent-requests"',
  );
  assert.match(monitor.headers.get("ratelimit") ?? "", /^"requests";r=3;t=1, "concurrency";r=1$/);
});

Deno.test("a monitor call refused before taking a slot still carries the concurrency fields", async () => {
  // SPEC §2.1: every authenticated response on a monitor route carries the
  // second, qu="concurrent-requests" policy; §2.2: monitor responses carry
  // X-Concurrent-*. Here: a 413 (body too large) and a 429 (rate) on /v1/monitor.
  const { app } = setup();
  for (let i = 0; i < 4; i++) {
    await (await app.request("/v1/limits", { headers: auth("acme") })).body?.cancel();
  }
  const tooLarge = await app.request("/v1/monitor/chatgpt", {
    method: "POST",
    headers: auth("acme", { "content-length": "5000" }),
    body: "z".repeat(5000),
  });
  const rateLimited = await app.request("/v1/monitor/chatgpt?prompt=x", {
    method: "POST",
    headers: auth("acme"),
  });
  for (const [response, status] of [[tooLarge, 413], [rateLimited, 429]] as const) {
    await response.body?.cancel();
    assert.equal(response.status, status);
    assert.equal(
      response.headers.get("ratelimit-policy"),
      '"requests";q=5;w=1, "concurrency";q=2;qu="concurrent-requests"',
      `${status}`,
    );
    assert.match(response.headers.get("ratelimit") ?? "", /, "concurrency";r=2$/, `${status}`);
    assert.equal(response.headers.get("x-concurrent-limit"), "2", `${status}`);
    assert.equal(response.headers.get("x-concurrent-current"), "0", `${status}`);
    assert.equal(response.headers.get("x-concurrent-remaining"), "2", `${status}`);
  }
});

Deno.test("X-Request-ID echoes a sane incoming id and replaces an insane one", async () => {
  const { app } = setup();
  const sane = ["req-123_abc.def:9", "a", "z".repeat(128)];
  for (const id of sane) {
    const response = await app.request("/healthz", { headers: { "x-request-id": id } });
    await response.body?.cancel();
    assert.equal(response.headers.get("x-request-id"), id);
  }
  const insane = ["has spaces in it", "z".repeat(129), "semi;colon", "<script>"];
  for (const id of insane) {
    const response = await app.request("/v1/limits", {
      headers: auth("acme", { "x-request-id": id }),
    });
    await response.body?.cancel();
    assert.match(response.headers.get("x-request-id") ?? "", UUID, id);
  }
  const generated = await app.request("/nowhere");
  await generated.body?.cancel();
  assert.match(generated.headers.get("x-request-id") ?? "", UUID);
});

Deno.test("X-Latency-Ms is the gateway's time to answer, on successes and errors", async () => {
  const clock = new FakeClock();
  // The simulated upstream takes 250 ms of fake time.
  const forwarder = new Simulator({
    latencyMs: { min: 250, max: 250 },
    sleep: (ms) => {
      clock.advance(ms);
      return Promise.resolve();
    },
  });
  const { app } = setup({ clock, forwarder });
  const monitor = await app.request("/v1/monitor/chatgpt?prompt=a", {
    method: "POST",
    headers: auth("acme"),
  });
  await monitor.body?.cancel();
  assert.equal(monitor.status, 200);
  assert.equal(monitor.headers.get("x-latency-ms"), "250");
  for (const [path, init] of [["/healthz", {}], ["/v1/limits", {}], ["/nowhere", {}]] as const) {
    const response = await app.request(path, init);
    await response.body?.cancel();
    assert.equal(response.headers.get("x-latency-ms"), "0", `${path} ${response.status}`);
  }
});

Deno.test("global shadow mode lets over-limit requests through, reporting remaining 0", async () => {
  const { app, clock, limiter } = setup({ shadow: true });
  for (let i = 0; i < 5; i++) {
    await (await app.request("/v1/limits", { headers: auth("acme") })).body?.cancel();
  }
  for (let i = 0; i < 3; i++) {
    const response = await app.request("/v1/limits", { headers: auth("acme") });
    assert.equal(response.status, 200);
    assertRateHeaders(response, 5, 0);
    await response.body?.cancel();
  }
  assert.equal(limiter.used("rate:acme", clock.nowMs()), 5, "shadowed requests are not counted");
});

Deno.test("a plan with shadow: true lets over-limit requests through; others stay limited", async () => {
  const { app } = setup();
  for (let i = 0; i < 6; i++) {
    const response = await app.request("/v1/limits", { headers: auth("shade") });
    assert.equal(response.status, 200, `request ${i}`);
    assertRateHeaders(response, 2, Math.max(0, 1 - i));
    const limits = await response.json();
    assert.equal(limits.plan.shadow, true);
  }
  for (let i = 0; i < 5; i++) {
    await (await app.request("/v1/limits", { headers: auth("acme") })).body?.cancel();
  }
  const limited = await app.request("/v1/limits", { headers: auth("acme") });
  assert.equal(limited.status, 429, "shadow is per plan");
  await limited.body?.cancel();
});

Deno.test("shadow mode lets a monitor call over the concurrency limit through", async () => {
  // Both calls sleep in the simulator until both have arrived, so they overlap.
  const bothArrived = Promise.withResolvers<void>();
  let arrived = 0;
  function sleep(): Promise<void> {
    if (++arrived === 2) bothArrived.resolve();
    return bothArrived.promise;
  }
  const { app, limiter } = setup({ forwarder: new Simulator({ sleep }) });
  // "shade" has one slot and a shadow plan: the second concurrent call goes through.
  const [first, second] = await Promise.all(
    [0, 1].map(() =>
      app.request("/v1/monitor/chatgpt?prompt=a", { method: "POST", headers: auth("shade") })
    ),
  );
  assert.ok(first !== undefined && second !== undefined);
  assert.equal(first.status, 200);
  assert.equal(second.status, 200);
  const remaining = [first, second].map((r) => r.headers.get("x-concurrent-remaining")).sort();
  assert.deepEqual(remaining, ["0", "0"]);
  await first.body?.cancel();
  await second.body?.cancel();
  assert.equal(limiter.slotsInUse("shade"), 0);
});

Deno.test("GET /v1/limits reports plan, window use and slots of the caller", async () => {
  const { app, clock } = setup();
  await (await app.request("/v1/limits", { headers: auth("acme") })).body?.cancel();
  clock.advance(10);
  const response = await app.request("/v1/limits", { headers: auth("acme") });
  assert.equal(response.status, 200);
  assert.deepEqual(await response.json(), {
    success: true,
    account: { id: "acme", plan: "basic" },
    plan: {
      name: "basic",
      concurrency: 2,
      rateLimit: { requests: 5, windowMs: 1000, scope: "account" },
      queueLimit: 100_000,
      shadow: false,
    },
    rate: { limit: 5, remaining: 3, used: 2, windowMs: 1000 },
    concurrency: { used: 0, max: 2 },
    queue: { queued: 0, limit: 100_000 },
  });
});

Deno.test("GET /openapi.json is an OpenAPI 3 document with the public routes", async () => {
  const { app } = setup();
  const response = await app.request("/openapi.json");
  assert.equal(response.status, 200);
  const doc = await response.json();
  assert.match(String(doc.openapi), /^3\.\d+\.\d+$/);
  assert.equal(typeof doc.info?.title, "string");
  assert.equal(typeof doc.info?.version, "string");
  for (const path of ["/v1/limits", "/v1/monitor/{provider}", "/healthz", "/readyz"]) {
    assert.ok(path in doc.paths, `missing ${path}`);
  }
  assert.ok(doc.paths["/v1/limits"].get.responses["200"]);
  assert.ok(doc.paths["/v1/limits"].get.responses["429"]);
  const monitor = doc.paths["/v1/monitor/{provider}"].post;
  assert.ok(
    monitor.parameters.some((p: { name: string; in: string }) =>
      p.name === "provider" && p.in === "path"
    ),
  );
  assert.equal(doc.components.securitySchemes.bearer.scheme, "bearer");
  assert.ok(doc.components.schemas.Error);
});

Deno.test("/healthz is alive and /readyz reports the loaded config", async () => {
  const { app } = setup();
  const health = await app.request("/healthz");
  assert.equal(health.status, 200);
  assert.deepEqual(await health.json(), { status: "ok" });
  const ready = await app.request("/readyz");
  assert.equal(ready.status, 200);
  const body = await ready.json();
  assert.equal(body.status, "ready");
  assert.equal(typeof body.details.configVersion, "string");
  assert.equal(body.details.lastReload.ok, true);
});

Deno.test("while draining, /readyz and /v1 answer 503 with Retry-After; /healthz stays up", async () => {
  const { app } = setup({ lifecycle: { draining: true } });
  const ready = await app.request("/readyz");
  await assertEnvelope(ready, 503, "SERVICE_UNAVAILABLE");
  assertWholeSeconds(ready.headers.get("retry-after"), 1);
  const limits = await app.request("/v1/limits", { headers: auth("acme") });
  await assertEnvelope(limits, 503, "SERVICE_UNAVAILABLE");
  const health = await app.request("/healthz");
  assert.equal(health.status, 200);
  await health.body?.cancel();
});

Deno.test("a monitor call through app.request answers, and no unexpected error is logged", async () => {
  const { app, limiter, unexpected } = setup();
  const response = await app.request("/v1/monitor/chatgpt", {
    method: "POST",
    headers: auth("big", { "content-type": "application/json" }),
    body: JSON.stringify({ prompt: "trail running shoes" }),
  });
  assert.equal(response.status, 200);
  assert.equal(response.headers.get("x-concurrent-limit"), "10");
  assert.equal(response.headers.get("x-concurrent-current"), "1");
  assert.equal(response.headers.get("x-concurrent-remaining"), "9");
  const body = await response.json();
  assert.equal(body.success, true);
  assert.match(body.result.text, /trail running shoes/);
  assert.equal(limiter.slotsInUse("big"), 0);
  assert.deepEqual(unexpected, []);
});
