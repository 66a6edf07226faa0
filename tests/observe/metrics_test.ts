import assert from "node:assert/strict";
import { createApp } from "../../src/http/app.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import { createGatewayMetrics } from "../../src/observe/gateway_metrics.ts";
import { Registry } from "../../src/observe/metrics.ts";
import { RequestLog } from "../../src/observe/request_log.ts";
import { Simulator } from "../../src/upstream/simulator.ts";
import { makeConfig, serveOnLoopback, testKey } from "../_helpers.ts";

const promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
});

Deno.test("Registry renders counters, histograms and collected series in the text format", () => {
  const registry = new Registry();
  const counter = registry.counter("x_total", "An x.");
  counter.inc({ route: 'a"b\\c' });
  counter.inc({ route: 'a"b\\c' }, 2);
  const histogram = registry.histogram("y_seconds", "A y.", [0.1, 1]);
  histogram.observe(0.05);
  histogram.observe(0.5);
  histogram.observe(5);
  registry.collect("z", "A z.", "gauge", () => [[{ account: "acme" }, 7]]);
  const text = registry.render();
  assert.match(text, /^x_total\{route="a\\"b\\\\c"\} 3$/m);
  assert.match(text, /^y_seconds_bucket\{le="0.1"\} 1$/m);
  assert.match(text, /^y_seconds_bucket\{le="1"\} 2$/m);
  assert.match(text, /^y_seconds_bucket\{le="\+Inf"\} 3$/m);
  assert.match(text, /^y_seconds_count 3$/m);
  assert.match(text, /^z\{account="acme"\} 7$/m);
  assert.throws(() => registry.counter("x_total", "again"), /registered twice/);
});

Deno.test({
  name: "a live /metrics scrape passes `promtool check metrics` and counts what happened",
  ignore: promtool === undefined,
  async fn() {
    const clock = { nowMs: () => Date.now() };
    const config = makeConfig(
      {
        one: { concurrency: 1, rateLimit: { requests: 3, windowMs: 60_000 } },
      },
      { acme: "one" },
    );
    const limiter = new Limiter({ epochMs: Date.now() - 1000 });
    const log = new RequestLog();
    const metrics = createGatewayMetrics({
      limiter,
      config,
      log,
      queueDepth: () => 0,
      reloads: () => ({ applied: 2, invalid: 1 }),
    });
    const app = createApp({
      config,
      limiter,
      clock,
      forwarder: new Simulator({ latencyMs: { min: 0, max: 0 } }),
      observe: { log, metrics },
    });
    const server = serveOnLoopback((request, info) => app.fetch(request, info));
    try {
      const headers = { authorization: `Bearer ${testKey("acme")}` };
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) {
        const response = await fetch(`${server.url}/v1/monitor/chatgpt`, { headers });
        statuses.push(response.status);
        await response.body?.cancel();
      }
      assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
      const unauthenticated = await fetch(`${server.url}/v1/limits`);
      await unauthenticated.body?.cancel();
      const scrape = await fetch(`${server.url}/metrics`);
      assert.match(scrape.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      const text = await scrape.text();
      assert.match(text, /^sluice_rate_limited_total\{plan="one"\} 2$/m);
      assert.match(
        text,
        /^sluice_requests_total\{route="\/v1\/monitor\/:provider",status="429"\} 2$/m,
      );
      assert.match(text, /^sluice_requests_total\{route="\/v1\/limits",status="401"\} 1$/m);
      assert.match(text, /^sluice_slots_in_use\{account="acme",plan="one"\} 0$/m);
      assert.match(text, /^sluice_plan_reloads_total\{result="invalid"\} 1$/m);
      const check = new Deno.Command(promtool ?? "promtool", {
        args: ["check", "metrics"],
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const writer = check.stdin.getWriter();
      await writer.write(new TextEncoder().encode(text));
      await writer.close();
      const result = await check.output();
      const output = new TextDecoder().decode(result.stdout) +
        new TextDecoder().decode(result.stderr);
      assert.equal(result.code, 0, `promtool check metrics failed:\n${output}`);
    } finally {
      await server.close();
    }
  },
});
