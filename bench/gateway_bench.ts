/**
 * Gateway cost per request, in process (no sockets): the same app (metrics
 * and dashboard counters on) with the request log off and on, measured in one
 * run. The log's background writer runs on its own timer, appending to a temp
 * file, as in production, so its cost is in the "on" numbers.
 *
 *   deno bench -A bench/gateway_bench.ts
 */

import { createApp } from "../src/http/app.ts";
import { Limiter } from "../src/limits/limiter.ts";
import { createGatewayMetrics } from "../src/observe/gateway_metrics.ts";
import { RequestLog } from "../src/observe/request_log.ts";
import { TrafficStats } from "../src/observe/traffic_stats.ts";
import { hashApiKey } from "../src/plans/api_key.ts";
import { buildSnapshot, ConfigStore } from "../src/plans/snapshot.ts";
import { Simulator } from "../src/upstream/simulator.ts";

const apiKey = "sk_bench_0123456789abcdef";
const built = buildSnapshot({
  plans: { bench: { concurrency: 100, rateLimit: { requests: 1_000_000, windowMs: 1000 } } },
  accounts: {
    acme: {
      plan: "bench",
      keys: [{ id: "k", hash: hashApiKey(apiKey), createdAt: "2026-01-01T00:00:00Z" }],
    },
  },
}, new Date());
if (!built.ok) throw new Error("bad bench config");
const clock = { nowMs: () => Date.now() };

function gateway(withLog: boolean) {
  if (!built.ok) throw new Error("bad bench config");
  const config = new ConfigStore(built.snapshot);
  const limiter = new Limiter({ epochMs: Date.now() });
  const forwarder = new Simulator({ latencyMs: { min: 0, max: 0 } });
  const stats = new TrafficStats();
  if (!withLog) {
    const metrics = createGatewayMetrics({ limiter, config });
    return createApp({ config, limiter, clock, forwarder, observe: { metrics, stats } });
  }
  const log = new RequestLog({ dir: Deno.makeTempDirSync() });
  const metrics = createGatewayMetrics({ limiter, config, log });
  const timer = setInterval(() => void log.drain(), 250);
  Deno.unrefTimer(timer);
  return createApp({ config, limiter, clock, forwarder, observe: { log, metrics, stats } });
}

const off = gateway(false);
const on = gateway(true);
const init = { headers: { authorization: `Bearer ${apiKey}` } };

// Warm both up alike before measuring, so JIT tiering does not favour the second.
for (let i = 0; i < 20_000; i++) {
  await (await off.request("/v1/limits", init)).arrayBuffer();
  await (await on.request("/v1/limits", init)).arrayBuffer();
}

Deno.bench({
  group: "request log",
  name: "GET /v1/limits, log off",
  baseline: true,
  n: 200_000,
  warmup: 20_000,
  async fn() {
    const response = await off.request("/v1/limits", init);
    await response.arrayBuffer();
  },
});

Deno.bench({
  group: "request log",
  name: "GET /v1/limits, log on (ring + background writer to a file)",
  n: 200_000,
  warmup: 20_000,
  async fn() {
    const response = await on.request("/v1/limits", init);
    await response.arrayBuffer();
  },
});
