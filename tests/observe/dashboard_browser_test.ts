/**
 * The dashboard end to end, as an operator uses it: the real gateway runs as
 * a child process (simulator upstream, 300 ms per call) and Debian's headless
 * Chromium, driven by playwright-core, logs in, watches live numbers move
 * under test traffic, finds a request by its X-Request-ID in the log tail
 * within 2 s, changes the demo account's plan from the page and sees the new
 * limit on the next monitor call, then sees a broken plans file reported.
 * A screenshot goes to `$SLUICE_SCREENSHOT` when set (the README's
 * `docs/dashboard.png` is made with `SLUICE_SCREENSHOT=docs/dashboard.png`),
 * else to a temp file that is checked and removed. No browser is ever downloaded:
 * the test is skipped where `/usr/bin/chromium` does not exist.
 */

import assert from "node:assert/strict";
import { type Browser, chromium, type Page } from "playwright-core";
import { startDeno } from "../shipping/_process.ts";

const CHROMIUM = "/usr/bin/chromium";
const TOKEN = "adm_browser_test_token_0123456789";
const root = new URL("../../", import.meta.url).pathname;

function chromiumExists(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

/** Monitor calls with the demo key; returns the response after reading its body. */
async function monitor(
  base: string,
  apiKey: string,
  headers: Record<string, string> = {},
): Promise<Response> {
  const response = await fetch(`${base}/v1/monitor/chatgpt`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json", ...headers },
    body: JSON.stringify({ prompt: "dashboard end to end" }),
  });
  await response.arrayBuffer();
  return response;
}

/**
 * Keeps `parallel` monitor calls in flight until `signal` aborts. A lane that
 * is refused paces itself (`refusedPauseMs`), so that refused lanes make a
 * trickle of 429s rather than a flood that trips the rate limit as well.
 */
async function traffic(
  base: string,
  apiKey: string,
  parallel: number,
  signal: AbortSignal,
  refusedPauseMs = 100,
): Promise<number[]> {
  const statuses: number[] = [];
  async function lane(): Promise<void> {
    while (!signal.aborted) {
      const status = await monitor(base, apiKey).then((r) => r.status, () => 0);
      statuses.push(status);
      if (status !== 200) await new Promise((resolve) => setTimeout(resolve, refusedPauseMs));
    }
  }
  await Promise.all(Array.from({ length: parallel }, lane));
  return statuses;
}

function demo(field: string): string {
  return `tr[data-account="demo"] [data-field="${field}"]`;
}

async function numberAttribute(page: Page, selector: string, name: string): Promise<number> {
  return Number(await page.locator(selector).getAttribute(name));
}

/** The page's DOM, as much of it as the predicates below read (tests have no lib.dom). */
declare const document: {
  querySelector(selector: string): { getAttribute(name: string): string | null } | null;
};

/** Waits until the number in attribute `name` of `selector` is at least `min` (or exactly `equals`). */
async function waitForNumber(
  page: Page,
  selector: string,
  name: string,
  expected: { min: number } | { equals: number },
  timeoutMs = 5000,
): Promise<void> {
  // A function, not a string: the page's CSP forbids evaluating strings.
  await page.waitForFunction(
    ({ selector, name, expected }) => {
      const value = Number(document.querySelector(selector)?.getAttribute(name));
      return "min" in expected ? value >= expected.min : value === expected.equals;
    },
    { selector, name, expected },
    { timeout: timeoutMs },
  );
}

Deno.test({
  name: "the dashboard shows live traffic, the log tail within 2 s, and changes a plan at once",
  ignore: !chromiumExists(),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sluice_dashboard_e2e_" });
    const proc = startDeno(
      [
        "run",
        "-A",
        `${root}main.ts`,
        "serve",
        "--port",
        "0",
        "--hostname",
        "127.0.0.1",
        "--admin-token",
        TOKEN,
        "--plans",
        `${dir}/plans.json`,
        "--data-dir",
        `${dir}/data`,
        "--sim-latency",
        "300-300",
      ],
      dir,
    );
    let browser: Browser | undefined;
    const stop = new AbortController();
    let running: Promise<number[]> | undefined;
    let exit: Deno.CommandStatus | undefined;
    let stderr = "";
    try {
      const [, port] = await proc.waitForLine(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
      const [, apiKey = ""] = await proc.waitForLine(/^\s+(sk_[A-Za-z0-9_-]+)$/);
      const base = `http://127.0.0.1:${port}`;

      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
        ],
      });
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const page = await context.newPage();
      const outside: string[] = [];
      page.on("request", (r) => {
        if (!r.url().startsWith(base)) outside.push(r.url());
      });
      const pageErrors: string[] = [];
      page.on("pageerror", (e) => pageErrors.push(String(e)));

      // Log in: a wrong token first, then the right one.
      await page.goto(`${base}/dashboard`);
      await page.fill("#token", "adm_not_the_token_0123456789");
      await page.click("button[type=submit]");
      await page.waitForSelector("#login-error");
      await page.fill("#token", TOKEN);
      await page.click("button[type=submit]");
      await page.waitForSelector('tr[data-account="demo"]');
      await page.waitForSelector("#conn.live");
      assert.equal(await page.inputValue('select[data-plan-for="demo"]'), "lite");
      assert.equal(await numberAttribute(page, demo("slots"), "data-limit"), 10);
      const cookies = await context.cookies(base);
      const session = cookies.find((c) => c.name === "sluice_admin");
      assert.ok(session?.httpOnly, "the token cookie is HttpOnly");
      assert.equal(session?.sameSite, "Strict");
      assert.ok(!page.url().includes(TOKEN), "the token is not in the URL");

      // Live numbers move under traffic: 12 lanes on 10 slots, so some are refused.
      running = traffic(base, apiKey, 12, stop.signal);
      await waitForNumber(page, demo("slots"), "data-used", { min: 5 });
      await waitForNumber(page, demo("rps"), "data-value", { min: 1 });
      await waitForNumber(
        page,
        '[data-account="demo"] [data-reason="concurrency"]',
        "data-value",
        { min: 1 },
      );

      // One request, found by its own X-Request-ID, in the tail within 2 s.
      const requestId = `dash-e2e-${crypto.randomUUID()}`;
      const tagged = await monitor(base, apiKey, { "x-request-id": requestId });
      assert.equal(tagged.headers.get("x-request-id"), requestId);
      const answeredAt = performance.now();
      const row = page.locator(`#log-tail tr[data-request-id="${requestId}"]`);
      await row.waitFor({ timeout: 2000 });
      const visibleAfterMs = performance.now() - answeredAt;
      assert.ok(visibleAfterMs < 2000, `log line shown after ${visibleAfterMs} ms`);
      assert.equal(await row.locator("td.account").textContent(), "demo");
      assert.equal(await row.locator("td.status").textContent(), String(tagged.status));

      // Filters: only concurrency refusals, then everything again.
      await page.selectOption("#filter-decision", "concurrency");
      const decisions = await page.locator("#log-tail tbody td.decision").allTextContents();
      assert.ok(
        decisions.length > 0 && decisions.every((d) => d === "concurrency"),
        `${decisions}`,
      );
      await page.selectOption("#filter-status", "2xx");
      assert.equal(await page.locator("#log-tail tbody tr").count(), 0, "no 2xx refusals");
      await page.selectOption("#filter-decision", "");
      await page.selectOption("#filter-status", "");
      assert.ok(await page.locator("#log-tail tbody tr").count() > 1);
      const shotPath = Deno.env.get("SLUICE_SCREENSHOT") ??
        await Deno.makeTempFile({ suffix: ".png" });
      await page.screenshot({ path: shotPath });
      assert.ok((await Deno.stat(shotPath)).size > 10_000, "the screenshot has content");
      if (Deno.env.get("SLUICE_SCREENSHOT") === undefined) await Deno.remove(shotPath);

      stop.abort();
      const statuses = await running;
      assert.ok(statuses.includes(200) && statuses.includes(429), `statuses: ${statuses}`);
      await waitForNumber(page, demo("slots"), "data-used", { equals: 0 });

      // Change the plan from the page: the next monitor call has the new limit.
      const patched = page.waitForResponse((r) =>
        r.url() === `${base}/admin/accounts/demo` && r.request().method() === "PATCH"
      );
      await page.selectOption('select[data-plan-for="demo"]', "business");
      assert.equal((await patched).status(), 200);
      const after = await monitor(base, apiKey);
      assert.equal(after.status, 200);
      assert.equal(after.headers.get("x-concurrent-limit"), "100");
      await waitForNumber(page, demo("slots"), "data-limit", { equals: 100 }, 3000);
      assert.equal(await page.inputValue('select[data-plan-for="demo"]'), "business");

      // A broken plans file is reported in the banner; the live config stays.
      assert.equal(await page.isHidden("#reload-error"), true);
      await Deno.writeTextFile(`${dir}/plans.json`, '{"plans": {"lite": {"concurrency": -1}}}');
      await page.waitForSelector("#reload-error:not([hidden])", { timeout: 5000 });
      assert.match(await page.textContent("#reload-error") ?? "", /plans\.lite\.concurrency/);
      assert.equal((await monitor(base, apiKey)).headers.get("x-concurrent-limit"), "100");

      assert.deepEqual(outside, [], "the page loads nothing from elsewhere");
      assert.deepEqual(pageErrors, []);
    } finally {
      stop.abort();
      await running;
      await browser?.close();
      try {
        proc.child.kill("SIGTERM");
      } catch {
        // already gone
      }
      exit = await proc.status.catch(() => undefined);
      stderr = await proc.stderr.catch(() => "");
      await Deno.remove(dir, { recursive: true });
    }
    assert.equal(exit?.code, 0, `the gateway exits cleanly on SIGTERM: ${stderr}`);
  },
});
