/**
 * The dashboard's HTTP surface through `app.request()`: the login flow and
 * its cookie, the event stream behind it, and the admin API's rules for
 * that cookie (reads as is, writes only with `x-sluice-dashboard: 1`).
 */

import assert from "node:assert/strict";
import { createApp } from "../../src/http/app.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import { DashboardFeed, type DashboardState } from "../../src/observe/dashboard_feed.ts";
import { RequestLog } from "../../src/observe/request_log.ts";
import { TrafficStats } from "../../src/observe/traffic_stats.ts";
import { loadPlansFile, renderPlansFile } from "../../src/plans/plans_file.ts";
import { PlansWriter } from "../../src/plans/plans_writer.ts";
import { ConfigStore } from "../../src/plans/snapshot.ts";
import { Simulator } from "../../src/upstream/simulator.ts";
import { FakeClock, plansDocument } from "../_helpers.ts";

const TOKEN = "adm_dashboard_test_token_0123456789";

async function withDashboard(
  run: (
    t: {
      request: (path: string, init?: RequestInit) => Promise<Response>;
      config: ConfigStore;
      feed: DashboardFeed;
      log: RequestLog;
    },
  ) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sluice_dashboard_" });
  const path = `${dir}/plans.json`;
  const document = plansDocument(
    { lite: { concurrency: 10 }, business: { concurrency: 100 } },
    { demo: "lite" },
  );
  await Deno.writeTextFile(path, renderPlansFile(document));
  const clock = new FakeClock();
  const loaded = await loadPlansFile(path, new Date(clock.nowMs()));
  if (!loaded.ok) throw new Error(JSON.stringify(loaded.errors));
  const config = new ConfigStore(loaded.snapshot);
  const limiter = new Limiter({ epochMs: clock.nowMs() });
  const stats = new TrafficStats();
  const log = new RequestLog();
  // The interval never fires: these tests read only each stream's first event.
  const feed = new DashboardFeed({ config, limiter, stats, clock, log, interval: () => {} });
  const app = createApp({
    config,
    limiter,
    clock,
    forwarder: new Simulator({ latencyMs: { min: 0, max: 0 } }),
    observe: { log, stats },
    admin: {
      token: TOKEN,
      writer: new PlansWriter(path, { config, clock }),
      watcher: undefined,
      startedAtMs: clock.nowMs(),
    },
    dashboard: { feed, token: TOKEN },
  });
  try {
    await run({ request: async (p, init) => await app.request(p, init), config, feed, log });
  } finally {
    feed.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function form(token: string): RequestInit {
  return {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ token }).toString(),
  };
}

const cookie = { cookie: `sluice_admin=${TOKEN}` };

Deno.test("GET /dashboard without the cookie shows only the login form", async () => {
  await withDashboard(async ({ request }) => {
    for (const headers of [{}, { cookie: "sluice_admin=adm_wrong_token_0123456789" }]) {
      const response = await request("/dashboard", { headers });
      assert.equal(response.status, 200);
      const html = await response.text();
      assert.match(html, /<form method="post" action="\/dashboard\/login">/);
      assert.match(html, /name="token" type="password"/);
      assert.doesNotMatch(html, /log-tail/);
    }
  });
});

Deno.test("a wrong token at /dashboard/login is 401 with the form again and no cookie", async () => {
  await withDashboard(async ({ request }) => {
    const response = await request("/dashboard/login", form("adm_wrong_token_0123456789"));
    assert.equal(response.status, 401);
    assert.equal(response.headers.get("set-cookie"), null);
    assert.match(await response.text(), /id="login-error"[^>]*>That is not the admin token/);
    const empty = await request("/dashboard/login", { method: "POST" });
    assert.equal(empty.status, 401);
    await empty.body?.cancel();
  });
});

Deno.test("the right token sets an HttpOnly SameSite=Strict cookie and redirects to the page", async () => {
  await withDashboard(async ({ request, log }) => {
    const response = await request("/dashboard/login", form(TOKEN));
    assert.equal(response.status, 303);
    assert.equal(response.headers.get("location"), "/dashboard");
    const setCookie = response.headers.get("set-cookie") ?? "";
    assert.match(setCookie, new RegExp(`^sluice_admin=${TOKEN};`));
    assert.match(setCookie, /; HttpOnly/i);
    assert.match(setCookie, /; SameSite=Strict/i);
    assert.match(setCookie, /; Path=\//);
    assert.doesNotMatch(response.headers.get("location") ?? "", new RegExp(TOKEN));

    const page = await request("/dashboard", { headers: cookie });
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /^text\/html/);
    const csp = page.headers.get("content-security-policy") ?? "";
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/=]+'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    const html = await page.text();
    assert.match(html, /id="log-tail"/);
    assert.match(html, /new EventSource\("\/dashboard\/events"\)/);
    assert.doesNotMatch(html, /https?:\/\/(?!www\.w3\.org\/2000\/svg)/, "no external resources");
    assert.ok(!html.includes(TOKEN), "the token is never in the page");

    await log.drain();
    const records: string[] = [];
    log.subscribe((batch) => records.push(JSON.stringify(batch)));
    await request("/dashboard", { headers: cookie }).then((r) => r.body?.cancel());
    await log.drain();
    assert.ok(records.length > 0 && !records.join("").includes(TOKEN), "the token is never logged");
  });
});

Deno.test("POST /dashboard/logout expires the cookie", async () => {
  await withDashboard(async ({ request }) => {
    const response = await request("/dashboard/logout", { method: "POST", headers: cookie });
    assert.equal(response.status, 303);
    assert.match(response.headers.get("set-cookie") ?? "", /^sluice_admin=; Max-Age=0; Path=\//);
  });
});

Deno.test("/dashboard/events is an event stream for the cookie only", async () => {
  await withDashboard(async ({ request, feed }) => {
    const anonymous = await request("/dashboard/events");
    assert.equal(anonymous.status, 401);
    assert.equal((await anonymous.json()).error.code, "MISSING_API_KEY");
    const wrongCookie = await request("/dashboard/events", {
      headers: { cookie: "sluice_admin=adm_wrong_token_0123456789" },
    });
    assert.equal(wrongCookie.status, 401);
    await wrongCookie.body?.cancel();
    assert.equal(feed.clients, 0);

    const response = await request("/dashboard/events", { headers: cookie });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get("content-type"), "text/event-stream");
    assert.equal(response.headers.get("cache-control"), "no-cache");
    assert.ok(response.body);
    const reader = response.body.getReader();
    const { value } = await reader.read();
    const data = /^data: (.*)$/m.exec(new TextDecoder().decode(value))?.[1] ?? "{}";
    const state: DashboardState = JSON.parse(data);
    assert.deepEqual(state.accounts.map((a) => [a.id, a.plan, a.slotsLimit]), [[
      "demo",
      "lite",
      10,
    ]]);
    assert.deepEqual(state.plans, ["lite", "business"]);
    assert.equal(feed.clients, 1);
    await reader.cancel();
    assert.equal(feed.clients, 0, "a client that goes away is removed");
  });
});

Deno.test("a cookie-authenticated PATCH needs x-sluice-dashboard: 1; with it the plan changes at once", async () => {
  await withDashboard(async ({ request, config }) => {
    const status = await request("/admin/status", { headers: cookie });
    assert.equal(status.status, 200, "reads need only the cookie");
    await status.body?.cancel();

    const patch = (headers: Record<string, string>) =>
      request("/admin/accounts/demo", {
        method: "PATCH",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify({ plan: "business" }),
      });
    const forged = await patch(cookie);
    assert.equal(forged.status, 401);
    assert.match((await forged.json()).error.message, /x-sluice-dashboard: 1/);
    assert.equal(config.current.accounts.get("demo")?.plan.name, "lite");

    const wrong = await patch({ cookie: "sluice_admin=adm_wrong", "x-sluice-dashboard": "1" });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();

    const done = await patch({ ...cookie, "x-sluice-dashboard": "1" });
    assert.equal(done.status, 200, await done.clone().text());
    assert.equal((await done.json()).account.plan, "business");
    assert.equal(config.current.accounts.get("demo")?.plan.concurrency, 100);

    const bearer = await request("/admin/accounts/demo", {
      method: "PATCH",
      headers: { "content-type": "application/json", authorization: `Bearer ${TOKEN}` },
      body: JSON.stringify({ plan: "lite" }),
    });
    assert.equal(bearer.status, 200, "bearer writes need no extra header");
    await bearer.body?.cancel();
  });
});
