import assert from "node:assert/strict";
import { parseDuration, parseServeFlags } from "../../src/config/flags.ts";

Deno.test("parseServeFlags() applies defaults from SPEC §6", () => {
  const result = parseServeFlags([], {});
  assert.ok(result.ok);
  if (!result.ok) return;
  assert.equal(result.value.port, 8080);
  assert.equal(result.value.plans, "./plans.json");
  assert.equal(result.value.upstream, undefined);
  assert.deepEqual(result.value.simLatencyMs, { min: 200, max: 1500 });
  assert.equal(result.value.maxBodyBytes, 1_048_576);
  assert.equal(result.value.upstreamTimeoutMs, 300_000);
  assert.equal(result.value.taskTtlMs, 86_400_000);
  assert.equal(result.value.workers, 1);
  assert.equal(result.value.shadow, false);
});

Deno.test("every flag has an env twin, and a flag beats its twin", () => {
  const env = {
    SLUICE_PORT: "9000",
    SLUICE_UPSTREAM: "http://127.0.0.1:9999/base",
    SLUICE_SIM_LATENCY: "10-20",
    SLUICE_SHADOW: "true",
    SLUICE_MAX_BODY: "512KiB",
  };
  const fromEnv = parseServeFlags([], env);
  assert.ok(fromEnv.ok);
  if (!fromEnv.ok) return;
  assert.equal(fromEnv.value.port, 9000);
  assert.equal(fromEnv.value.upstream, "http://127.0.0.1:9999/base");
  assert.deepEqual(fromEnv.value.simLatencyMs, { min: 10, max: 20 });
  assert.equal(fromEnv.value.shadow, true);
  assert.equal(fromEnv.value.maxBodyBytes, 524_288);
  const flagWins = parseServeFlags(["--port", "7000"], env);
  assert.ok(flagWins.ok && flagWins.value.port === 7000);
});

Deno.test("bad flag values are refused with a message naming the flag", () => {
  for (
    const [args, pattern] of [
      [["--port", "70000"], /--port/],
      [["--upstream", "ftp://x"], /--upstream/],
      [["--sim-error-rate", "2"], /--sim-error-rate/],
      [["--upstream-timeout", "soon"], /--upstream-timeout/],
      [["--nope"], /nope/],
    ] as const
  ) {
    const result = parseServeFlags([...args], {});
    assert.equal(result.ok, false);
    if (!result.ok) assert.match(result.error, pattern);
  }
});

Deno.test("parseDuration() reads ms, s, m, h and bare seconds", () => {
  assert.equal(parseDuration("500ms", "x"), 500);
  assert.equal(parseDuration("30s", "x"), 30_000);
  assert.equal(parseDuration("5m", "x"), 300_000);
  assert.equal(parseDuration("24h", "x"), 86_400_000);
  assert.equal(parseDuration("2", "x"), 2000);
});
