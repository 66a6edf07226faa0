import assert from "node:assert/strict";
import { createApp } from "../../src/http/app.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import { createGatewayMetrics } from "../../src/observe/gateway_metrics.ts";
import { RequestLog, type RequestRecord } from "../../src/observe/request_log.ts";
import { Simulator } from "../../src/upstream/simulator.ts";
import { FakeClock, makeConfig, testKey } from "../_helpers.ts";

function record(n: number): RequestRecord {
  return {
    timeMs: n,
    requestId: `r${n}`,
    accountId: "a",
    keyId: "k",
    plan: "p",
    method: "GET",
    path: "/v1/limits",
    status: 200,
    latencyMs: 1,
    decision: "admitted",
  };
}

Deno.test("RequestLog.push() never blocks: a full ring drops and counts, in order of arrival", async () => {
  const log = new RequestLog({ capacity: 4 });
  for (let i = 0; i < 10; i++) log.push(record(i));
  assert.equal(log.pending, 4);
  assert.equal(log.dropped, 6);
  const seen: string[] = [];
  log.subscribe((batch) => seen.push(...batch.map((r) => r.requestId)));
  await log.drain();
  assert.deepEqual(seen, ["r0", "r1", "r2", "r3"]);
  assert.equal(log.pending, 0);
  assert.equal(log.written, 4);
  log.push(record(10));
  await log.drain();
  assert.deepEqual(seen.at(-1), "r10");
});

Deno.test("RequestLog writes JSON lines and rotates by size, keeping N files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const log = new RequestLog({ dir, maxFileBytes: 1000, keepFiles: 2, batchSize: 3 });
    for (let i = 0; i < 60; i++) log.push(record(i));
    await log.drain();
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, ["requests.log", "requests.log.1", "requests.log.2"]);
    const current = await Deno.readTextFile(`${dir}/requests.log`);
    assert.ok(current.length <= 1000, `current file is ${current.length} bytes`);
    const last = current.trim().split("\n").map((line) => JSON.parse(line));
    assert.equal(last.at(-1)?.requestId, "r59");
    for (const name of names) {
      for (const line of (await Deno.readTextFile(`${dir}/${name}`)).trim().split("\n")) {
        assert.equal(typeof JSON.parse(line).requestId, "string");
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a log flooded faster than it drains drops records, counts them in /metrics, and requests still answer", async () => {
  const clock = new FakeClock();
  const config = makeConfig({ p: { concurrency: 5, rateLimit: { requests: 100_000 } } }, {
    acme: "p",
  });
  const limiter = new Limiter({ epochMs: clock.nowMs() - 1000 });
  const log = new RequestLog({ capacity: 16 });
  const metrics = createGatewayMetrics({ limiter, config, log });
  const app = createApp({
    config,
    limiter,
    clock,
    forwarder: new Simulator({ latencyMs: { min: 0, max: 0 } }),
    observe: { log, metrics },
  });
  const headers = { authorization: `Bearer ${testKey("acme")}` };
  // Nothing drains the ring during the flood: the writer has "fallen behind" completely.
  for (let i = 0; i < 500; i++) {
    const response = await app.request("/v1/limits", { headers });
    assert.equal(response.status, 200);
    await response.body?.cancel();
  }
  assert.equal(log.pending, 16);
  assert.equal(log.dropped, 484);
  const scrape = await app.request("/metrics");
  const text = await scrape.text();
  assert.match(text, /^sluice_log_records_dropped_total 484$/m);
  assert.match(text, /^sluice_requests_total\{route="\/v1\/limits",status="200"\} 500$/m);
});
