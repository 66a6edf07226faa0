/**
 * The multi-isolate data plane over real sockets: `sluice serve --workers 2`
 * as a subprocess, clients on fresh connections (so the kernel spreads them
 * over the isolates listening with reusePort). Limits must stay exact across
 * isolates, plan changes must reach every isolate before an admin write
 * returns, and no slot may leak.
 */

import assert from "node:assert/strict";
import { serveOnLoopback } from "../_helpers.ts";
import { type RunningProcess, startDeno } from "../shipping/_process.ts";

const main = new URL("../../main.ts", import.meta.url).pathname;
const config = new URL("../../deno.json", import.meta.url).pathname;
const ADMIN = "admin-token-for-workers-test";

interface Gateway {
  base: string;
  proc: RunningProcess;
  dir: string;
  client: Deno.HttpClient;
  stop(): Promise<void>;
}

async function startGateway(plans: unknown, extra: string[] = []): Promise<Gateway> {
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(`${dir}/plans.json`, JSON.stringify(plans));
  const proc = startDeno([
    "run",
    "-A",
    "--config",
    config,
    main,
    "serve",
    "--port",
    "0",
    "--hostname",
    "127.0.0.1",
    "--workers",
    "2",
    "--admin-token",
    ADMIN,
    "--plans",
    `${dir}/plans.json`,
    "--data-dir",
    `${dir}/data`,
    ...extra,
  ], dir);
  const [, port] = await proc.waitForLine(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
  await proc.waitForLine(/2 data-plane isolates share port/);
  // No pooling: every request opens its own connection, so requests spread over isolates.
  const client = Deno.createHttpClient({ poolMaxIdlePerHost: 0 });
  return {
    base: `http://127.0.0.1:${port}`,
    proc,
    dir,
    client,
    async stop() {
      proc.child.kill("SIGTERM");
      const status = await proc.status;
      await proc.stderr;
      client.close();
      await Deno.remove(dir, { recursive: true });
      assert.equal(status.code, 0);
    },
  };
}

async function admin(gw: Gateway, method: string, path: string, body?: unknown) {
  const response = await fetch(`${gw.base}${path}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    client: gw.client,
  });
  const json = await response.json();
  assert.ok(response.ok, `${method} ${path}: ${JSON.stringify(json)}`);
  return json;
}

async function newKey(gw: Gateway, account: string, plan: string): Promise<string> {
  await admin(gw, "PUT", `/admin/accounts/${account}`, { plan });
  const created = await admin(gw, "POST", `/admin/accounts/${account}/keys`);
  return created.key;
}

async function call(gw: Gateway, path: string, key: string, signal?: AbortSignal) {
  const response = await fetch(`${gw.base}${path}`, {
    headers: { authorization: `Bearer ${key}` },
    client: gw.client,
    ...(signal === undefined ? {} : { signal }),
  });
  await response.body?.cancel();
  return response;
}

async function isolatesServed(gw: Gateway): Promise<Map<string, number>> {
  const text = await (await fetch(`${gw.base}/metrics`, { client: gw.client })).text();
  const served = new Map<string, number>();
  for (const match of text.matchAll(/^sluice_isolate_requests_total\{isolate="(\d+)"\} (\d+)$/gm)) {
    served.set(match[1] ?? "", Number(match[2]));
  }
  return served;
}

/** Worker records reach the main isolate in batches every 250 ms: wait for both to show. */
async function waitForBothIsolates(gw: Gateway): Promise<Map<string, number>> {
  const deadline = Date.now() + 3000;
  for (;;) {
    const served = await isolatesServed(gw);
    if ((served.get("0") ?? 0) > 0 && (served.get("1") ?? 0) > 0) return served;
    if (Date.now() > deadline) return served;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

Deno.test("across 2 isolates a 50-request window with 200 concurrent requests admits exactly 50", async () => {
  const gw = await startGateway({
    plans: { fifty: { concurrency: 5, rateLimit: { requests: 50, windowMs: 60_000 } } },
    accounts: {},
  });
  try {
    const key = await newKey(gw, "acme", "fifty");
    const statuses = await Promise.all(
      Array.from({ length: 200 }, () => call(gw, "/v1/limits", key).then((r) => r.status)),
    );
    assert.equal(statuses.filter((s) => s === 200).length, 50);
    assert.equal(statuses.filter((s) => s === 429).length, 150);
    const served = await waitForBothIsolates(gw);
    assert.ok(
      (served.get("0") ?? 0) > 0 && (served.get("1") ?? 0) > 0,
      `one isolate took all: ${[...served]}`,
    );
  } finally {
    await gw.stop();
  }
});

Deno.test("across 2 isolates 5 slots with 20 simultaneous monitor calls admit exactly 5", async () => {
  const gw = await startGateway(
    { plans: { five: { concurrency: 5 } }, accounts: {} },
    ["--sim-latency", "1500-1500"],
  );
  try {
    const key = await newKey(gw, "acme", "five");
    const responses = await Promise.all(
      Array.from({ length: 20 }, () => call(gw, "/v1/monitor/chatgpt", key)),
    );
    const statuses = responses.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 5, statuses.join());
    assert.equal(statuses.filter((s) => s === 429).length, 15);
    const served = await waitForBothIsolates(gw);
    assert.ok(
      (served.get("0") ?? 0) > 0 && (served.get("1") ?? 0) > 0,
      `one isolate took all: ${[...served]}`,
    );
  } finally {
    await gw.stop();
  }
});

Deno.test("a plan change reaches every isolate before the admin write returns", async () => {
  const gw = await startGateway(
    { plans: { small: { concurrency: 2 }, big: { concurrency: 9 } }, accounts: {} },
    ["--sim-latency", "400-400"],
  );
  try {
    const key = await newKey(gw, "acme", "small");
    for (const [plan, limit] of [["big", 9], ["small", 2], ["big", 9]] as const) {
      await admin(gw, "PATCH", "/admin/accounts/acme", { plan });
      const responses = await Promise.all(
        Array.from({ length: 24 }, () => call(gw, "/v1/monitor/chatgpt", key)),
      );
      const limits = new Set(responses.map((r) => r.headers.get("x-concurrent-limit")));
      assert.deepEqual([...limits], [String(limit)], `after switching to ${plan}`);
      assert.equal(responses.filter((r) => r.status === 200).length, limit);
    }
  } finally {
    await gw.stop();
  }
});

Deno.test("no slot leaks across 2 isolates: aborts, upstream errors and timeouts all give slots back", async () => {
  let seed = 20261128;
  const random = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const upstream = serveOnLoopback(async (request) => {
    const roll = random();
    if (roll < 0.25) return new Response("fast");
    if (roll < 0.45) return new Response("oops", { status: 500 });
    if (roll < 0.65) {
      await new Promise((resolve) => setTimeout(resolve, 600)); // past the 200 ms timeout
      return new Response("late");
    }
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        for (let i = 0; i < 5 && !request.signal.aborted; i++) {
          controller.enqueue(new TextEncoder().encode(`chunk ${i}\n`));
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        controller.close();
      },
    });
    return new Response(body);
  });
  const gw = await startGateway(
    { plans: { wide: { concurrency: 1000, rateLimit: { requests: 100_000 } } }, accounts: {} },
    ["--upstream", upstream.url, "--upstream-timeout", "200ms"],
  );
  try {
    const key = await newKey(gw, "acme", "wide");
    let next = 0;
    await Promise.all(Array.from({ length: 20 }, async () => {
      while (next++ < 300) {
        const controller = new AbortController();
        const abort = random() < 0.3;
        if (abort) setTimeout(() => controller.abort(), Math.floor(random() * 60));
        try {
          const response = await fetch(`${gw.base}/v1/monitor/chatgpt`, {
            headers: { authorization: `Bearer ${key}` },
            client: gw.client,
            signal: controller.signal,
          });
          await response.text();
        } catch {
          // aborted on purpose
        }
      }
    }));
    // Releases in a worker happen when its response stream ends, a moment after the
    // client saw it; the admin view reads the shared semaphore. Bounded wait, 5 s.
    const deadline = Date.now() + 5000;
    let inUse = -1;
    while (Date.now() < deadline) {
      const account = await admin(gw, "GET", "/admin/accounts/acme");
      inUse = account.account.usage.slotsInUse;
      if (inUse === 0) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(inUse, 0, "slots in use after the storm");
    const metrics = await (await fetch(`${gw.base}/metrics`, { client: gw.client })).text();
    assert.match(metrics, /^sluice_lease_reclaims_total 0$/m);
    assert.match(metrics, /^sluice_slots_in_use\{account="acme",plan="wide"\} 0$/m);
  } finally {
    await gw.stop();
    await upstream.close();
  }
});
