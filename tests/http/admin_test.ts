/**
 * The admin API (SPEC §6.2) through the gateway app on a real plans file:
 * token checks, plan and account CRUD, keys, webhook secrets, reload, and
 * plan changes that apply to the very next request without resetting rate
 * windows or dropping slots in flight (SPEC §2.2). The last test runs the real
 * server as a child process and checks that the admin token never reaches its
 * output.
 */

import { plansFixture } from "../plans/_plans_fixture.ts";
import assert from "node:assert/strict";
import { createApp } from "../../src/http/app.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import { hashApiKey } from "../../src/plans/api_key.ts";
import { parsePlansText, renderPlansFile } from "../../src/plans/plans_file.ts";
import type { PlansFile } from "../../src/plans/schema.ts";
import type { ConfigStore } from "../../src/plans/snapshot.ts";
import { Simulator } from "../../src/upstream/simulator.ts";
import { plansDocument, SleepGate, testKey } from "../_helpers.ts";
import { startDeno } from "../shipping/_process.ts";

const ADMIN_TOKEN = "adm_admin_test_token_0123456789abcdef";

interface Gateway {
  path: string;
  config: ConfigStore;
  limiter: Limiter;
  gate: SleepGate;
  request(path: string, init?: RequestInit): Promise<Response>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * The gateway app on a real temp plans file. The watcher is not started, so
 * a hand edit is picked up only by `POST /admin/reload` and tests stay exact.
 */
async function startGateway(document: PlansFile): Promise<Gateway> {
  const fixture = await plansFixture(document);
  const { path, clock, config, watcher, writer } = fixture;
  const limiter = new Limiter({ epochMs: clock.nowMs() });
  const gate = new SleepGate();
  const app = createApp({
    config,
    limiter,
    clock,
    forwarder: new Simulator({ latencyMs: { min: 0, max: 0 }, sleep: gate.sleep }),
    admin: { token: ADMIN_TOKEN, writer, watcher, startedAtMs: clock.nowMs() },
  });
  return {
    path,
    config,
    limiter,
    gate,
    request: async (p, init) => await app.request(p, init),
    async [Symbol.asyncDispose]() {
      gate.releaseAll();
      await fixture[Symbol.asyncDispose]();
    },
  };
}

interface Answer {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any -- response JSON, read field by field in assertions
  body: any;
}

async function answer(response: Response): Promise<Answer> {
  return { status: response.status, headers: response.headers, body: await response.json() };
}

/** An admin call with the right token (or `token`; `null` for none), JSON body optional. */
async function admin(
  gw: Gateway,
  method: string,
  path: string,
  body?: unknown,
  token: string | null = ADMIN_TOKEN,
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const init: RequestInit = { method, headers };
  if (body !== undefined) init.body = JSON.stringify(body);
  return await answer(await gw.request(`/admin${path}`, init));
}

async function limits(gw: Gateway, key = testKey("acme")): Promise<Answer> {
  return await answer(
    await gw.request("/v1/limits", { headers: { authorization: `Bearer ${key}` } }),
  );
}

async function monitor(gw: Gateway): Promise<Answer> {
  return await answer(
    await gw.request("/v1/monitor/chatgpt", {
      method: "POST",
      headers: { authorization: `Bearer ${testKey("acme")}` },
    }),
  );
}

/**
 * Starts `count` monitor calls whose upstream is held; resolves once all of
 * them hold a slot (wrapped, since an async function would adopt a promise).
 */
async function holdMonitors(gw: Gateway, count: number): Promise<{ calls: Promise<Answer>[] }> {
  gw.gate.holding = true;
  const held = gw.gate.whenHeld(count);
  const calls = Array.from({ length: count }, () => monitor(gw));
  await held;
  gw.gate.holding = false;
  return { calls };
}

function slotHeaders(a: Answer) {
  return {
    status: a.status,
    limit: a.headers.get("x-concurrent-limit"),
    current: a.headers.get("x-concurrent-current"),
    remaining: a.headers.get("x-concurrent-remaining"),
  };
}

const PLANS: PlansFile["plans"] = {
  small: { concurrency: 2, rateLimit: { requests: 100, windowMs: 60_000 } },
  big: { concurrency: 4, rateLimit: { requests: 100, windowMs: 60_000 } },
  free: { concurrency: 1 },
};

async function fileText(gw: Gateway): Promise<string> {
  return await Deno.readTextFile(gw.path);
}

Deno.test("admin routes answer 401 MISSING_API_KEY without a token and INVALID_OR_EXPIRED_API_KEY with a wrong one", async () => {
  await using gw = await startGateway(plansDocument(PLANS, { acme: "small" }));
  const before = await fileText(gw);
  const routes: [string, string, unknown?][] = [
    ["GET", "/status"],
    ["GET", "/plans"],
    ["PUT", "/plans/evil", { concurrency: 1000 }],
    ["DELETE", "/plans/free"],
    ["GET", "/accounts/acme"],
    ["PATCH", "/accounts/acme", { plan: "big" }],
    ["POST", "/accounts/acme/keys"],
    ["POST", "/reload"],
  ];
  for (const [method, path, body] of routes) {
    const missing = await admin(gw, method, path, body, null);
    assert.equal(missing.status, 401, `${method} ${path}`);
    assert.equal(missing.body.error.code, "MISSING_API_KEY");
    const wrong = await admin(gw, method, path, body, `${ADMIN_TOKEN}x`);
    assert.equal(wrong.status, 401, `${method} ${path}`);
    assert.equal(wrong.body.error.code, "INVALID_OR_EXPIRED_API_KEY");
  }
  const basic = await answer(
    await gw.request("/admin/status", { headers: { authorization: `Basic ${ADMIN_TOKEN}` } }),
  );
  assert.equal(basic.body.error.code, "MISSING_API_KEY");
  const apiKey = await admin(gw, "GET", "/status", undefined, testKey("acme"));
  assert.equal(
    apiKey.body.error.code,
    "INVALID_OR_EXPIRED_API_KEY",
    "an API key is no admin token",
  );
  assert.equal(await fileText(gw), before, "no refused call wrote anything");
  assert.equal((await admin(gw, "GET", "/status")).status, 200);
});

Deno.test("PATCH plan upgrade: the very next monitor call sees the new limit and is admitted while the old slots are all held", async () => {
  await using gw = await startGateway(plansDocument(PLANS, { acme: "small" }));
  const { calls } = await holdMonitors(gw, 2);
  const full = slotHeaders(await monitor(gw));
  assert.deepEqual(full, { status: 429, limit: "2", current: "2", remaining: "0" });

  const patched = await admin(gw, "PATCH", "/accounts/acme", { plan: "big" });
  assert.equal(patched.status, 200);
  assert.equal(patched.body.account.plan, "big");
  assert.equal(patched.body.account.usage.slotsInUse, 2);

  assert.deepEqual(slotHeaders(await monitor(gw)), {
    status: 200,
    limit: "4",
    current: "3",
    remaining: "1",
  });
  gw.gate.releaseAll();
  for (const call of await Promise.all(calls)) assert.equal(call.status, 200);
  assert.equal(gw.limiter.slotsInUse("acme"), 0);
});

Deno.test("PATCH plan downgrade: calls in flight finish with 200, new ones get 429 until use falls under the new limit", async () => {
  await using gw = await startGateway(plansDocument(PLANS, { acme: "big" }));
  const { calls } = await holdMonitors(gw, 3);
  assert.equal((await admin(gw, "PATCH", "/accounts/acme", { plan: "small" })).status, 200);

  const rejected = await monitor(gw);
  assert.deepEqual(slotHeaders(rejected), {
    status: 429,
    limit: "2",
    current: "3",
    remaining: "0",
  });
  assert.equal(rejected.body.error.code, "CONCURRENCY_LIMIT_EXCEEDED");
  assert.equal(rejected.body.error.details.limit, 2);

  // 3 → 2 in use: still not under the new limit of 2.
  gw.gate.releaseOne();
  const [first, second, third] = calls;
  assert.ok(first && second && third);
  assert.equal((await first).status, 200);
  assert.equal(gw.limiter.slotsInUse("acme"), 2);
  const stillFull = await monitor(gw);
  assert.equal(stillFull.status, 429);
  assert.equal(stillFull.body.error.code, "CONCURRENCY_LIMIT_EXCEEDED");

  // 2 → 1 in use: under the limit, the next call is admitted.
  gw.gate.releaseOne();
  assert.equal((await second).status, 200);
  assert.deepEqual(slotHeaders(await monitor(gw)), {
    status: 200,
    limit: "2",
    current: "2",
    remaining: "0",
  });
  gw.gate.releaseOne();
  assert.equal((await third).status, 200);
  assert.equal(gw.limiter.slotsInUse("acme"), 0);
});

Deno.test("PUT plan rate changes apply on the next request without resetting the window", async () => {
  await using gw = await startGateway(plansDocument(
    { pro: { concurrency: 2, rateLimit: { requests: 5, windowMs: 60_000 } } },
    { acme: "pro" },
  ));
  for (const remaining of ["4", "3", "2"]) {
    assert.equal((await limits(gw)).headers.get("x-ratelimit-remaining"), remaining);
  }
  const raised = await admin(gw, "PUT", "/plans/pro", {
    concurrency: 2,
    rateLimit: { requests: 10, windowMs: 60_000 },
  });
  assert.equal(raised.status, 200);
  assert.equal(raised.body.created, false);
  const after = await limits(gw);
  assert.equal(after.headers.get("x-ratelimit-limit"), "10");
  assert.equal(after.headers.get("x-ratelimit-remaining"), "6", "4 used of 10, not a fresh window");

  const lowered = await admin(gw, "PUT", "/plans/pro", {
    concurrency: 2,
    rateLimit: { requests: 4, windowMs: 60_000 },
  });
  assert.equal(lowered.status, 200);
  const denied = await limits(gw);
  assert.equal(denied.status, 429, "4 already used of the new 4");
  assert.equal(denied.body.error.code, "RATE_LIMIT_EXCEEDED");
  assert.equal(denied.body.error.details.limit, 4);
});

Deno.test("POST keys returns {id, key} that works at once, the file holds only its hash; DELETE revokes it", async () => {
  await using gw = await startGateway(plansDocument(PLANS, { acme: "small" }));
  const created = await admin(gw, "POST", "/accounts/acme/keys");
  assert.equal(created.status, 200);
  const { id, key } = created.body;
  assert.match(id, /^[A-Za-z0-9_.-]+$/);
  assert.equal(typeof key, "string");

  const withNewKey = await limits(gw, key);
  assert.equal(withNewKey.status, 200);
  assert.equal(withNewKey.body.account.id, "acme");

  const text = await fileText(gw);
  assert.equal(text.includes(key), false, "the plaintext key is not in the plans file");
  assert.ok(text.includes(hashApiKey(key)), "its sha256 hash is");
  const parsed = parsePlansText(text, new Date());
  assert.ok(parsed.ok);
  for (const stored of parsed.snapshot.document.accounts?.acme?.keys ?? []) {
    assert.match(stored.hash, /^sha256:[0-9a-f]{64}$/);
  }
  const account = await admin(gw, "GET", "/accounts/acme");
  assert.ok(account.body.account.keys.some((k: { id: string }) => k.id === id));
  assert.equal(JSON.stringify(account.body).includes("sha256:"), false, "no hashes over the API");

  const revoked = await admin(gw, "DELETE", `/accounts/acme/keys/${id}`);
  assert.equal(revoked.status, 200);
  const refused = await limits(gw, key);
  assert.equal(refused.status, 401);
  assert.equal(refused.body.error.code, "INVALID_OR_EXPIRED_API_KEY");
  assert.equal((await limits(gw)).status, 200, "the account's other key still works");

  assert.equal(
    (await admin(gw, "DELETE", `/accounts/acme/keys/${id}`)).body.error.code,
    "CONFLICT",
  );
  const unknown = await admin(gw, "DELETE", "/accounts/acme/keys/key_nope");
  assert.equal(unknown.status, 404);
  assert.equal(unknown.body.error.code, "RESOURCE_NOT_FOUND");
  assert.equal((await admin(gw, "POST", "/accounts/nobody/keys")).status, 404);
});

Deno.test("POST webhook-secret rotates to a new whsec_ secret, returned once and stored", async () => {
  await using gw = await startGateway(plansDocument(PLANS, { acme: "small" }));
  const first = await admin(gw, "POST", "/accounts/acme/webhook-secret");
  assert.equal(first.status, 200);
  assert.match(first.body.webhookSecret, /^whsec_[A-Za-z0-9+/]{16,}={0,2}$/);
  assert.equal(gw.config.current.accounts.get("acme")?.webhookSecret, first.body.webhookSecret);
  assert.ok((await fileText(gw)).includes(first.body.webhookSecret));

  const second = await admin(gw, "POST", "/accounts/acme/webhook-secret");
  assert.notEqual(second.body.webhookSecret, first.body.webhookSecret);
  assert.equal(gw.config.current.accounts.get("acme")?.webhookSecret, second.body.webhookSecret);
  const view = await admin(gw, "GET", "/accounts/acme");
  assert.equal(view.body.account.hasWebhookSecret, true);
  assert.equal(JSON.stringify(view.body).includes("whsec_"), false, "GET never shows the secret");
  assert.equal((await admin(gw, "POST", "/accounts/nobody/webhook-secret")).status, 404);
});

Deno.test("PUT/GET/DELETE plans: created or replaced, validated, and not deleted while in use (409)", async () => {
  await using gw = await startGateway(plansDocument(PLANS, { acme: "small" }));
  const listed = await admin(gw, "GET", "/plans");
  assert.deepEqual(Object.keys(listed.body.plans).sort(), ["big", "free", "small"]);
  assert.deepEqual(listed.body.plans.free.rateLimit, {
    requests: 500,
    windowMs: 1000,
    scope: "account",
  });

  const created = await admin(gw, "PUT", "/plans/gold", { concurrency: 30, queueLimit: 10 });
  assert.equal(created.status, 200);
  assert.equal(created.body.created, true);
  assert.equal(created.body.plan.concurrency, 30);
  assert.equal(gw.config.current.plans.get("gold")?.queueLimit, 10);
  const replaced = await admin(gw, "PUT", "/plans/gold", { concurrency: 40 });
  assert.equal(replaced.body.created, false);
  assert.equal(gw.config.current.plans.get("gold")?.concurrency, 40);

  const bad = await admin(gw, "PUT", "/plans/gold", { concurrency: -1 });
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.code, "VALIDATION_ERROR");
  const unknownField = await admin(gw, "PUT", "/plans/gold", { concurrency: 1, burst: 5 });
  assert.equal(unknownField.status, 400);
  assert.equal(gw.config.current.plans.get("gold")?.concurrency, 40, "refusals change nothing");

  const inUse = await admin(gw, "DELETE", "/plans/small");
  assert.equal(inUse.status, 409);
  assert.equal(inUse.body.error.code, "CONFLICT");
  assert.match(inUse.body.error.message, /acme/);
  assert.ok(gw.config.current.plans.has("small"));
  assert.match(await fileText(gw), /"small"/);

  assert.equal((await admin(gw, "DELETE", "/plans/gold")).status, 200);
  assert.equal(gw.config.current.plans.has("gold"), false);
  assert.equal((await admin(gw, "DELETE", "/plans/gold")).status, 404);
});

Deno.test("PUT/GET/PATCH/DELETE accounts: validated against the plans, live at once", async () => {
  await using gw = await startGateway(plansDocument(PLANS, { acme: "small" }));
  const created = await admin(gw, "PUT", "/accounts/newco", { plan: "big" });
  assert.equal(created.status, 200);
  assert.equal(created.body.created, true);
  assert.equal(created.body.account.limits.concurrency, 4);
  assert.deepEqual(created.body.account.keys, []);

  const listed = await admin(gw, "GET", "/accounts");
  assert.deepEqual(listed.body.accounts.map((a: { id: string }) => a.id).sort(), ["acme", "newco"]);
  const acme = await admin(gw, "GET", "/accounts/acme");
  assert.equal(acme.body.account.plan, "small");
  assert.deepEqual(acme.body.account.keys.map((k: { id: string }) => k.id), ["key_acme"]);

  const replaced = await admin(gw, "PUT", "/accounts/acme", { plan: "free" });
  assert.equal(replaced.body.created, false);
  assert.deepEqual(replaced.body.account.keys.map((k: { id: string }) => k.id), ["key_acme"]);
  assert.equal((await limits(gw)).body.plan.name, "free", "keys kept, new plan live");

  const unknownPlan = await admin(gw, "PUT", "/accounts/acme", { plan: "gold" });
  assert.equal(unknownPlan.status, 400);
  assert.equal(unknownPlan.body.error.code, "VALIDATION_ERROR");
  assert.deepEqual(unknownPlan.body.error.details.fields.map((f: { path: string }) => f.path), [
    "accounts.acme.plan",
  ]);
  const patchUnknown = await admin(gw, "PATCH", "/accounts/acme", { plan: "gold" });
  assert.equal(patchUnknown.status, 400);
  assert.equal((await limits(gw)).body.plan.name, "free");

  assert.equal((await admin(gw, "PATCH", "/accounts/nobody", { plan: "big" })).status, 404);
  assert.equal((await admin(gw, "GET", "/accounts/nobody")).status, 404);
  assert.equal((await admin(gw, "PUT", "/accounts/acme", { plan: "big", extra: 1 })).status, 400);

  assert.equal((await admin(gw, "DELETE", "/accounts/acme")).status, 200);
  assert.equal((await admin(gw, "GET", "/accounts/acme")).status, 404);
  const gone = await limits(gw);
  assert.equal(gone.status, 401, "a deleted account's keys stop working");
  assert.equal(gone.body.error.code, "INVALID_OR_EXPIRED_API_KEY");
  assert.equal((await admin(gw, "DELETE", "/accounts/acme")).status, 404);
});

Deno.test("POST /admin/reload applies a valid hand edit and reports an invalid one with its path", async () => {
  await using gw = await startGateway(plansDocument(PLANS, { acme: "small" }));
  const versionBefore = gw.config.current.version;
  assert.equal((await admin(gw, "POST", "/reload")).body.result, "unchanged");

  await Deno.writeTextFile(
    gw.path,
    renderPlansFile(plansDocument({ ...PLANS, small: { concurrency: 9 } }, { acme: "small" })),
  );
  const applied = await admin(gw, "POST", "/reload");
  assert.equal(applied.status, 200);
  assert.equal(applied.body.result, "applied");
  assert.notEqual(applied.body.version, versionBefore);
  assert.equal(slotHeaders(await monitor(gw)).limit, "9");

  await Deno.writeTextFile(
    gw.path,
    renderPlansFile(plansDocument(PLANS, { acme: "gold" })),
  );
  const invalid = await admin(gw, "POST", "/reload");
  assert.equal(invalid.status, 400);
  assert.equal(invalid.body.error.code, "VALIDATION_ERROR");
  assert.deepEqual(invalid.body.error.details.fields.map((f: { path: string }) => f.path), [
    "accounts.acme.plan",
  ]);
  const status = await admin(gw, "GET", "/status");
  assert.equal(status.body.lastReload.ok, false);
  assert.equal(status.body.lastReload.errors[0].path, "accounts.acme.plan");
  assert.equal(status.body.config.version, applied.body.version, "the last good config stays");
  assert.deepEqual(status.body.reloads, { applied: 1, invalid: 1 });
  assert.equal(slotHeaders(await monitor(gw)).limit, "9");

  // Asking again (as an operator does after the watcher already saw the bad
  // file) still reports the file invalid, not "unchanged" with a 200.
  const again = await admin(gw, "POST", "/reload");
  assert.equal(
    again.status,
    400,
    `a second reload of the same bad file: ${JSON.stringify(again.body)}`,
  );
  assert.deepEqual(again.body.error.details.fields.map((f: { path: string }) => f.path), [
    "accounts.acme.plan",
  ]);
  assert.deepEqual(
    (await admin(gw, "GET", "/status")).body.reloads,
    { applied: 1, invalid: 1 },
    "the same bad file is counted once",
  );

  // An admin write over the bad file repairs it and clears the error.
  assert.equal((await admin(gw, "PATCH", "/accounts/acme", { plan: "big" })).status, 200);
  const repaired = await admin(gw, "GET", "/status");
  assert.equal(repaired.body.lastReload.ok, true);
  assert.equal(repaired.body.lastReload.source, "admin");
  assert.ok(parsePlansText(await fileText(gw), new Date()).ok);
});

Deno.test("the real server never prints the admin token it was given", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice_token_" });
  const token = `adm_${crypto.randomUUID().replaceAll("-", "")}`;
  const wrongToken = `adm_${crypto.randomUUID().replaceAll("-", "")}`;
  const path = `${dir}/plans.json`;
  await Deno.writeTextFile(path, renderPlansFile(plansDocument(PLANS, { acme: "small" })));
  const mainPath = new URL("../../main.ts", import.meta.url).pathname;
  const server = startDeno([
    "run",
    "-A",
    mainPath,
    "serve",
    "--port",
    "0",
    "--hostname",
    "127.0.0.1",
    "--admin-token",
    token,
    "--plans",
    path,
    "--sim-latency",
    "0-0",
  ], dir);
  try {
    const [, base] = await server.waitForLine(/listening on (http:\/\/\S+)/);
    const call = async (method: string, route: string, auth: string, body?: unknown) => {
      const init: RequestInit = { method, headers: { authorization: `Bearer ${auth}` } };
      if (body !== undefined) {
        init.body = JSON.stringify(body);
        init.headers = { authorization: `Bearer ${auth}`, "content-type": "application/json" };
      }
      const response = await fetch(`${base}${route}`, init);
      await response.body?.cancel();
      return response.status;
    };
    assert.equal(await call("GET", "/admin/status", token), 200);
    assert.equal(await call("GET", "/admin/status", wrongToken), 401);
    assert.equal(await call("PATCH", "/admin/accounts/acme", token, { plan: "big" }), 200);
    assert.equal(await call("POST", "/admin/accounts/acme/keys", wrongToken), 401);
    assert.equal(await call("POST", "/admin/reload", token), 200);
    // An invalid hand edit makes the server log errors; reload reports it.
    await Deno.writeTextFile(path, renderPlansFile(plansDocument(PLANS, { acme: "gold" })));
    assert.equal(await call("POST", "/admin/reload", token), 400);
    assert.equal(await call("GET", "/v1/limits", token), 401, "the admin token is no API key");
  } finally {
    server.child.kill("SIGTERM");
    const status = await server.status;
    const stderr = await server.stderr;
    await Deno.remove(dir, { recursive: true });
    const stdout = server.lines.join("\n");
    assert.equal(status.success, true, `exit ${status.code}: ${stderr}`);
    assert.match(stderr, /accounts\.acme\.plan/, "the rejection was logged");
    assert.equal(stdout.includes(token), false, "token not on stdout");
    assert.equal(stderr.includes(token), false, "token not on stderr");
    assert.equal(stdout.includes(wrongToken) || stderr.includes(wrongToken), false);
  }
});
