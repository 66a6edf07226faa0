/**
 * Hand edits of a real plans file reach a running gateway (SPEC §6): a plain
 * write and an editor's save-by-rename are both applied within 2 s; an
 * invalid file leaves the last good config serving and shows its error with
 * the JSON path; and a reload never resets rate windows or held slots.
 *
 * Nothing sleeps: each step waits for the event it expects (a config swap,
 * or the watcher's report of an invalid file) with a 2 s deadline that fails
 * the test.
 */

import { plansFixture } from "./_plans_fixture.ts";
import assert from "node:assert/strict";
import { createApp } from "../../src/http/app.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import { hashApiKey } from "../../src/plans/api_key.ts";
import { renderPlansFile } from "../../src/plans/plans_file.ts";
import { PlansWatcher, type ReloadOutcome } from "../../src/plans/plans_watcher.ts";
import type { PlansFile } from "../../src/plans/schema.ts";
import type { ConfigSnapshot, ConfigStore } from "../../src/plans/snapshot.ts";
import { Simulator } from "../../src/upstream/simulator.ts";
import { FakeClock, makeConfig, plansDocument, SleepGate, testKey } from "../_helpers.ts";

const ADMIN_TOKEN = "adm_watcher_test_token_0123456789";
const DEADLINE_MS = 2000;

/**
 * Resolves with the first value `subscribe` delivers, or rejects after the
 * deadline; always unsubscribes and clears its timer.
 */
function waitFor<T>(
  subscribe: (fire: (value: T) => void) => () => void,
  what: string,
  timeoutMs = DEADLINE_MS,
): Promise<T> {
  const { promise, resolve, reject } = Promise.withResolvers<T>();
  const timer = setTimeout(() => reject(new Error(`no ${what} within ${timeoutMs} ms`)), timeoutMs);
  const unsubscribe = subscribe(resolve);
  return promise.finally(() => {
    clearTimeout(timer);
    unsubscribe();
  });
}

/** The next config swap whose snapshot satisfies `predicate`. */
function nextSwap(
  config: ConfigStore,
  predicate: (snapshot: ConfigSnapshot) => boolean = () => true,
): Promise<ConfigSnapshot> {
  return waitFor<ConfigSnapshot>(
    (fire) => config.subscribe((snapshot) => predicate(snapshot) && fire(snapshot)),
    "config swap",
  );
}

interface LiveGateway {
  dir: string;
  path: string;
  config: ConfigStore;
  limiter: Limiter;
  watcher: PlansWatcher;
  gate: SleepGate;
  request(path: string, init?: RequestInit): Promise<Response>;
  /** The next invalid-file report whose errors include `errorPath`. */
  nextRejection(errorPath: string): Promise<ReloadOutcome>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A gateway app on a real temp plans file with a started watcher. */
async function startLiveGateway(document: PlansFile): Promise<LiveGateway> {
  const reports = new Set<(outcome: ReloadOutcome) => void>();
  const fixture = await plansFixture(document, {
    start: true,
    watcher: {
      debounceMs: 50,
      pollMs: 200,
      onReload: (outcome) => {
        for (const report of reports) report(outcome);
      },
    },
  });
  const { dir, path, clock, config, watcher, writer } = fixture;
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
    dir,
    path,
    config,
    limiter,
    watcher,
    gate,
    request: async (p, init) => await app.request(p, init),
    nextRejection: (errorPath) =>
      waitFor<ReloadOutcome>((fire) => {
        const report = (outcome: ReloadOutcome) => {
          if (outcome.result === "invalid" && outcome.errors.some((e) => e.path === errorPath)) {
            fire(outcome);
          }
        };
        reports.add(report);
        return () => reports.delete(report);
      }, `rejection naming ${errorPath}`),
    async [Symbol.asyncDispose]() {
      gate.releaseAll();
      await watcher.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function bearer(token: string): HeadersInit {
  return { authorization: `Bearer ${token}` };
}

const ACME = bearer(testKey("acme"));

/** `GET /v1/limits` as acme: status, rate headers, body consumed. */
async function limits(gw: LiveGateway, headers: HeadersInit = ACME) {
  const response = await gw.request("/v1/limits", { headers });
  const body = await response.json();
  return {
    status: response.status,
    rateLimit: response.headers.get("x-ratelimit-limit"),
    rateRemaining: response.headers.get("x-ratelimit-remaining"),
    body,
  };
}

/** A monitor call as acme that is not held: status, slot headers, body consumed. */
async function monitor(gw: LiveGateway) {
  const response = await gw.request("/v1/monitor/chatgpt", {
    method: "POST",
    headers: { ...ACME, "content-type": "application/json" },
    body: JSON.stringify({ prompt: "best running shoes" }),
  });
  const body = await response.json();
  return {
    status: response.status,
    limit: response.headers.get("x-concurrent-limit"),
    current: response.headers.get("x-concurrent-current"),
    rateRemaining: response.headers.get("x-ratelimit-remaining"),
    body,
  };
}

/**
 * Starts a monitor call whose upstream is held; resolves once it holds its
 * slot (the response is wrapped: an async function would adopt the promise).
 */
async function heldMonitor(
  gw: LiveGateway,
  heldBefore: number,
): Promise<{ response: Promise<Response> }> {
  gw.gate.holding = true;
  const arrived = gw.gate.whenHeld(heldBefore + 1);
  const response = gw.request("/v1/monitor/chatgpt", { method: "POST", headers: ACME });
  await arrived;
  gw.gate.holding = false;
  return { response };
}

async function adminJson(gw: LiveGateway, path: string) {
  const response = await gw.request(path, { headers: bearer(ADMIN_TOKEN) });
  assert.equal(response.status, 200, path);
  return await response.json();
}

function proPlans(concurrency: number, requests: number, windowMs = 60_000): PlansFile["plans"] {
  return { pro: { concurrency, rateLimit: { requests, windowMs } }, free: { concurrency: 1 } };
}

/** An editor's atomic save: write a temp file beside the target, rename over it. */
async function editorSave(path: string, text: string): Promise<void> {
  const temp = `${path}.swp-${crypto.randomUUID()}`;
  await Deno.writeTextFile(temp, text);
  await Deno.rename(temp, path);
}

Deno.test("a hand edit by plain write is live for the next request within 2 s", async () => {
  await using gw = await startLiveGateway(plansDocument(proPlans(2, 100), { acme: "pro" }));
  const before = await limits(gw);
  assert.equal(before.status, 200);
  assert.equal(before.rateLimit, "100");
  assert.equal((await monitor(gw)).limit, "2");

  const swapped = nextSwap(gw.config, (s) => s.plans.get("pro")?.concurrency === 5);
  await Deno.writeTextFile(
    gw.path,
    renderPlansFile(plansDocument(proPlans(5, 200), { acme: "pro" })),
  );
  await swapped;

  const after = await limits(gw);
  assert.equal(after.status, 200);
  assert.equal(after.rateLimit, "200");
  const call = await monitor(gw);
  assert.equal(call.status, 200);
  assert.equal(call.limit, "5");
  assert.equal(gw.config.lastReload.source, "file");
  assert.equal(gw.watcher.counts.applied, 1);
});

Deno.test("an editor's save by temp file + rename is live within 2 s, new keys included", async () => {
  await using gw = await startLiveGateway(plansDocument(proPlans(2, 100), { acme: "pro" }));
  assert.equal((await limits(gw, bearer(testKey("beta")))).status, 401);

  const swapped = nextSwap(gw.config, (s) => s.plans.get("pro")?.concurrency === 7);
  await editorSave(
    gw.path,
    renderPlansFile(plansDocument(proPlans(7, 300), { acme: "pro", beta: "free" })),
  );
  await swapped;

  const after = await limits(gw);
  assert.equal(after.rateLimit, "300");
  assert.equal((await monitor(gw)).limit, "7");
  const beta = await limits(gw, bearer(testKey("beta")));
  assert.equal(beta.status, 200, "a key added by hand works at once");
  assert.equal(beta.body.plan.name, "free");

  // A second save by rename (the watched inode changed again) is seen as well.
  const revoked = plansDocument(proPlans(7, 300), { acme: "pro", beta: "free" });
  const betaKey = revoked.accounts?.beta?.keys?.[0];
  assert.ok(betaKey);
  betaKey.revokedAt = "2026-02-01T00:00:00Z";
  const swappedAgain = nextSwap(gw.config, (s) => !s.keysByHash.has(hashApiKey(testKey("beta"))));
  await editorSave(gw.path, renderPlansFile(revoked));
  await swappedAgain;
  const rejected = await limits(gw, bearer(testKey("beta")));
  assert.equal(rejected.status, 401);
  assert.equal(rejected.body.error.code, "INVALID_OR_EXPIRED_API_KEY");
});

/** Each kind of bad hand edit, and the JSON path its error must name. */
const BAD_EDITS: { name: string; text: string; errorPath: string }[] = [
  { name: "invalid JSON", text: '{"plans": {"pro": {"concurrency": 3}', errorPath: "(root)" },
  {
    name: "an unknown plan",
    text: renderPlansFile(plansDocument(proPlans(2, 10), { acme: "gold" })),
    errorPath: "accounts.acme.plan",
  },
  {
    name: "a duplicate key id",
    text: (() => {
      const document = plansDocument(proPlans(2, 10), { acme: "pro" });
      const keys = document.accounts?.acme?.keys ?? [];
      keys.push({
        id: "key_acme",
        hash: hashApiKey("another-key-0123456789"),
        createdAt: "2026-01-01T00:00:00Z",
      });
      return renderPlansFile(document);
    })(),
    errorPath: "accounts.acme.keys.1.id",
  },
  {
    name: "a negative limit",
    text: renderPlansFile(plansDocument(proPlans(2, -5), { acme: "pro" })),
    errorPath: "plans.pro.rateLimit.requests",
  },
];

Deno.test("an invalid hand edit keeps the last good config live and shows its JSON path until fixed", async () => {
  await using gw = await startLiveGateway(plansDocument(proPlans(2, 100), { acme: "pro" }));
  let goodRequests = 100;
  for (const bad of BAD_EDITS) {
    const liveVersion = gw.config.current.version;
    const rejected = gw.nextRejection(bad.errorPath);
    await Deno.writeTextFile(gw.path, bad.text);
    await rejected;

    assert.equal(gw.config.current.version, liveVersion, `${bad.name}: config unchanged`);
    const still = await limits(gw);
    assert.equal(still.status, 200, `${bad.name}: requests still served`);
    assert.equal(still.rateLimit, String(goodRequests), `${bad.name}: old limits still apply`);
    assert.equal((await monitor(gw)).limit, "2");

    const status = await adminJson(gw, "/admin/status");
    assert.equal(status.lastReload.ok, false, bad.name);
    assert.ok(
      status.lastReload.errors.some((e: { path: string }) => e.path === bad.errorPath),
      `${bad.name}: /admin/status names ${bad.errorPath}: ${JSON.stringify(status.lastReload)}`,
    );
    assert.equal(status.config.version, liveVersion);
    const ready = await adminJson(gw, "/readyz");
    assert.equal(ready.status, "ready");
    assert.equal(ready.details.lastReload.ok, false);
    assert.ok(
      ready.details.lastReload.errors.some((e: { path: string }) => e.path === bad.errorPath),
      `${bad.name}: /readyz names ${bad.errorPath}`,
    );

    goodRequests++;
    const fixed = nextSwap(
      gw.config,
      (s) => s.plans.get("pro")?.rateLimit.requests === goodRequests,
    );
    await Deno.writeTextFile(
      gw.path,
      renderPlansFile(plansDocument(proPlans(2, goodRequests), { acme: "pro" })),
    );
    await fixed;
    const cleared = await adminJson(gw, "/admin/status");
    assert.equal(cleared.lastReload.ok, true, `${bad.name}: a fixed file clears the error`);
    assert.deepEqual(cleared.lastReload.errors, []);
    assert.equal((await adminJson(gw, "/readyz")).details.lastReload.ok, true);
    assert.equal((await limits(gw)).rateLimit, String(goodRequests));
  }
  assert.equal(gw.watcher.counts.invalid, BAD_EDITS.length);
});

Deno.test("restoring exactly the last good content clears a hand-edit error", async () => {
  await using gw = await startLiveGateway(plansDocument(proPlans(2, 100), { acme: "pro" }));
  const good = await Deno.readTextFile(gw.path);
  const liveVersion = gw.config.current.version;

  const rejected = gw.nextRejection("plans.pro.concurrency");
  await Deno.writeTextFile(
    gw.path,
    renderPlansFile(plansDocument(proPlans(-1, 100), { acme: "pro" })),
  );
  await rejected;
  assert.equal((await adminJson(gw, "/admin/status")).lastReload.ok, false);

  const restored = nextSwap(gw.config);
  await editorSave(gw.path, good);
  const snapshot = await restored;
  assert.equal(snapshot.version, liveVersion, "the same config stays live");
  const status = await adminJson(gw, "/admin/status");
  assert.equal(status.lastReload.ok, true);
  assert.deepEqual(status.lastReload.errors, []);
  assert.equal((await limits(gw)).status, 200);
});

Deno.test("a hand-edit reload keeps the rate window's count and the slots held in flight", async () => {
  await using gw = await startLiveGateway(plansDocument(proPlans(2, 10), { acme: "pro" }));
  assert.equal((await limits(gw)).rateRemaining, "9");
  assert.equal((await limits(gw)).rateRemaining, "8");
  assert.equal((await limits(gw)).rateRemaining, "7");
  const held = await heldMonitor(gw, 0); // the 4th request of the window, holding a slot
  assert.equal(gw.limiter.slotsInUse("acme"), 1);

  // Same window shape, different concurrency.
  const swapped = nextSwap(gw.config, (s) => s.plans.get("pro")?.concurrency === 3);
  await Deno.writeTextFile(
    gw.path,
    renderPlansFile(plansDocument(proPlans(3, 10), { acme: "pro" })),
  );
  await swapped;

  assert.equal(gw.limiter.slotsInUse("acme"), 1, "the held slot is still counted");
  const after = await limits(gw);
  assert.equal(after.rateRemaining, "5", "the window continues where it was (10 - 5)");
  assert.deepEqual(after.body.concurrency, { used: 1, max: 3 });
  const call = await monitor(gw);
  assert.equal(call.status, 200);
  assert.equal(call.limit, "3");
  assert.equal(call.current, "2", "the held slot plus this one");
  assert.equal(call.rateRemaining, "4");

  gw.gate.releaseOne();
  const response = await held.response;
  assert.equal(response.status, 200);
  assert.equal((await response.json()).success, true, "the held call completes normally");
  assert.equal(gw.limiter.slotsInUse("acme"), 0);
});

Deno.test("where the directory cannot be watched, the stat poll alone picks up the file", async () => {
  const root = await Deno.makeTempDir({ prefix: "sluice_poll_" });
  const dir = `${root}/not-yet`; // watching a missing directory fails at start
  const path = `${dir}/plans.json`;
  const config = makeConfig(proPlans(2, 100), { acme: "pro" });
  const watcher = new PlansWatcher(path, {
    config,
    clock: new FakeClock(),
    debounceMs: 10,
    pollMs: 50,
  });
  try {
    await watcher.start();
    const swapped = nextSwap(config, (s) => s.plans.get("pro")?.concurrency === 9);
    await Deno.mkdir(dir);
    await editorSave(path, renderPlansFile(plansDocument(proPlans(9, 100), { acme: "pro" })));
    await swapped;
    assert.equal(config.lastReload.source, "file");
    assert.deepEqual(watcher.counts, { applied: 1, invalid: 0 });
  } finally {
    await watcher.stop();
    await Deno.remove(root, { recursive: true });
  }
});
