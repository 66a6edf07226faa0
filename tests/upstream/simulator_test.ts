/**
 * The built-in simulator (SPEC §7): a plausible JSON answer derived from the
 * prompt, latency drawn from the configured range, a configurable error rate,
 * 404 for unknown providers, and giving up at once when the caller goes away.
 * Latency is observed through an injected `sleep`, randomness is seeded.
 */

import assert from "node:assert/strict";
import { createApp } from "../../src/http/app.ts";
import { HttpError } from "../../src/http/errors.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import type { ForwardContext } from "../../src/upstream/forwarder.ts";
import { abortableSleep, DEFAULT_PROVIDERS, Simulator } from "../../src/upstream/simulator.ts";
import { FakeClock, makeConfig, seededRandom, testKey } from "../_helpers.ts";

const SEED = 20260101;

function context(signal = new AbortController().signal): ForwardContext {
  return {
    accountId: "acme",
    planName: "pro",
    requestId: "req-sim-1",
    clientAddress: undefined,
    signal,
  };
}

const noSleep = () => Promise.resolve();

interface Answer {
  success: boolean;
  result: { text: string; sources: { title: string; url: string; rank: number }[] };
  meta: { provider: string; latencyMs: number; requestId: string };
}

async function answerOf(response: Response): Promise<Answer> {
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /^application\/json/);
  return await response.json();
}

function assertHttpError(status: number, code: string) {
  return (error: unknown) => {
    assert.ok(error instanceof HttpError, String(error));
    assert.equal(error.status, status);
    assert.equal(error.code, code);
    return true;
  };
}

Deno.test("Simulator answers {success, result: {text, sources[]}} about the JSON body's prompt", async () => {
  const simulator = new Simulator({ sleep: noSleep });
  const response = await simulator.forward(
    new Request("http://gateway/v1/monitor/chatgpt", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ prompt: "best trail running shoes" }),
    }),
    context(),
  );
  const answer = await answerOf(response);
  assert.equal(answer.success, true);
  assert.match(answer.result.text, /best trail running shoes/);
  assert.match(answer.result.text, /chatgpt/);
  assert.ok(Array.isArray(answer.result.sources));
  assert.ok(answer.result.sources.length > 0);
  for (const source of answer.result.sources) {
    assert.equal(typeof source.title, "string");
    assert.ok(URL.canParse(source.url), source.url);
    assert.equal(typeof source.rank, "number");
  }
  assert.match(answer.result.sources[0]?.title ?? "", /best trail running shoes/);
  assert.equal(answer.meta.provider, "chatgpt");
  assert.equal(answer.meta.requestId, "req-sim-1");
});

Deno.test("Simulator takes the prompt from ?prompt= when there is no body", async () => {
  const simulator = new Simulator({ sleep: noSleep });
  const response = await simulator.forward(
    new Request("http://gateway/v1/monitor/perplexity?prompt=electric%20bikes%20for%20commuting"),
    context(),
  );
  const answer = await answerOf(response);
  assert.match(answer.result.text, /electric bikes for commuting/);
  assert.equal(answer.meta.provider, "perplexity");
});

Deno.test("Simulator treats a non-JSON body as the prompt itself", async () => {
  const simulator = new Simulator({ sleep: noSleep });
  const response = await simulator.forward(
    new Request("http://gateway/v1/monitor/gemini", { method: "POST", body: "plain text prompt" }),
    context(),
  );
  assert.match((await answerOf(response)).result.text, /plain text prompt/);
});

Deno.test("Simulator answers every default provider, case-insensitively", async () => {
  const simulator = new Simulator({ sleep: noSleep });
  for (const provider of [...DEFAULT_PROVIDERS, "ChatGPT", "GOOGLE_NEWS"]) {
    const response = await simulator.forward(
      new Request(`http://gateway/v1/monitor/${provider}?prompt=x`),
      context(),
    );
    assert.equal((await answerOf(response)).meta.provider, provider.toLowerCase());
  }
});

Deno.test("Simulator latency is drawn from the configured range (seeded)", async () => {
  const asked: number[] = [];
  const simulator = new Simulator({
    latencyMs: { min: 200, max: 1500 },
    random: seededRandom(SEED),
    sleep: (ms) => {
      asked.push(ms);
      return Promise.resolve();
    },
  });
  for (let i = 0; i < 300; i++) {
    const response = await simulator.forward(
      new Request("http://gateway/v1/monitor/chatgpt?prompt=x"),
      context(),
    );
    const answer = await answerOf(response);
    assert.equal(answer.meta.latencyMs, asked[i], "the answer reports the latency it waited");
  }
  assert.equal(asked.length, 300);
  for (const ms of asked) {
    assert.ok(Number.isInteger(ms), `${ms} is whole milliseconds`);
    assert.ok(ms >= 200 && ms <= 1500, `seed ${SEED}: ${ms} outside 200..1500`);
  }
  // The whole range is used, not one end of it.
  assert.ok(Math.min(...asked) < 300, `seed ${SEED}: min ${Math.min(...asked)}`);
  assert.ok(Math.max(...asked) > 1400, `seed ${SEED}: max ${Math.max(...asked)}`);
});

Deno.test("Simulator latency hits both ends of the range and a fixed range exactly", async () => {
  async function askedFor(random: number, latencyMs: { min: number; max: number }) {
    let asked = -1;
    const simulator = new Simulator({
      latencyMs,
      random: () => random,
      sleep: (ms) => {
        asked = ms;
        return Promise.resolve();
      },
    });
    await (await simulator.forward(new Request("http://gateway/v1/monitor/grok"), context())).body
      ?.cancel();
    return asked;
  }
  assert.equal(await askedFor(0, { min: 50, max: 80 }), 50);
  assert.equal(await askedFor(0.999999, { min: 50, max: 80 }), 80);
  assert.equal(await askedFor(0.5, { min: 0, max: 0 }), 0);
});

Deno.test("Simulator with errorRate 1 always fails with 502 UPSTREAM_ERROR", async () => {
  const simulator = new Simulator({ errorRate: 1, sleep: noSleep, random: seededRandom(SEED) });
  for (let i = 0; i < 50; i++) {
    await assert.rejects(
      simulator.forward(new Request("http://gateway/v1/monitor/chatgpt?prompt=x"), context()),
      assertHttpError(502, "UPSTREAM_ERROR"),
    );
  }
});

Deno.test("Simulator with errorRate 0 never fails", async () => {
  const simulator = new Simulator({ errorRate: 0, sleep: noSleep, random: seededRandom(SEED) });
  for (let i = 0; i < 500; i++) {
    const response = await simulator.forward(
      new Request("http://gateway/v1/monitor/chatgpt?prompt=x"),
      context(),
    );
    assert.equal(response.status, 200);
    await response.body?.cancel();
  }
});

Deno.test("Simulator with errorRate 0.3 fails about 30% of calls (seeded)", async () => {
  const simulator = new Simulator({ errorRate: 0.3, sleep: noSleep, random: seededRandom(SEED) });
  let failed = 0;
  for (let i = 0; i < 1000; i++) {
    try {
      const response = await simulator.forward(
        new Request("http://gateway/v1/monitor/chatgpt?prompt=x"),
        context(),
      );
      await response.body?.cancel();
    } catch (error) {
      assertHttpError(502, "UPSTREAM_ERROR")(error);
      failed++;
    }
  }
  assert.ok(failed > 240 && failed < 360, `seed ${SEED}: ${failed} of 1000 failed`);
});

Deno.test("Simulator answers 404 RESOURCE_NOT_FOUND for an unknown provider or path", async () => {
  const simulator = new Simulator({ sleep: noSleep, providers: ["alpha"] });
  for (const path of ["/v1/monitor/chatgpt", "/v1/monitor/nosuch", "/v1/monitor/alpha/extra"]) {
    await assert.rejects(
      simulator.forward(new Request(`http://gateway${path}`), context()),
      assertHttpError(404, "RESOURCE_NOT_FOUND"),
      path,
    );
  }
  const response = await simulator.forward(
    new Request("http://gateway/v1/monitor/alpha"),
    context(),
  );
  assert.equal(response.status, 200);
  await response.body?.cancel();
});

Deno.test("Simulator refuses a body over maxBodyBytes with 413", async () => {
  const simulator = new Simulator({ sleep: noSleep, maxBodyBytes: 100 });
  await assert.rejects(
    simulator.forward(
      new Request("http://gateway/v1/monitor/chatgpt", { method: "POST", body: "x".repeat(101) }),
      context(),
    ),
    assertHttpError(413, "PAYLOAD_TOO_LARGE"),
  );
});

Deno.test("Simulator gives up when the caller aborts during the latency", async () => {
  const waiting = Promise.withResolvers<number>();
  const simulator = new Simulator({
    latencyMs: { min: 60_000, max: 60_000 },
    // The real sleep, so its 60 s timer must be cleared on abort (the op
    // sanitizer would report it otherwise); we only learn when it starts.
    sleep: (ms, signal) => {
      waiting.resolve(ms);
      return abortableSleep(ms, signal);
    },
  });
  const abort = new AbortController();
  const call = simulator.forward(
    new Request("http://gateway/v1/monitor/chatgpt?prompt=x"),
    context(abort.signal),
  );
  assert.equal(await waiting.promise, 60_000);
  abort.abort(new DOMException("client went away", "AbortError"));
  await assert.rejects(call, (error: unknown) => {
    assert.ok(error instanceof DOMException);
    assert.equal(error.message, "client went away");
    return true;
  });
});

Deno.test("abortableSleep resolves after the time, or rejects at once on an aborted signal", async () => {
  await abortableSleep(0, new AbortController().signal);
  const aborted = AbortSignal.abort(new Error("already gone"));
  await assert.rejects(abortableSleep(60_000, aborted), /already gone/);
});

Deno.test("through the gateway, a simulated failure is a 502 envelope and the slot comes back", async () => {
  const clock = new FakeClock();
  const limiter = new Limiter({ epochMs: clock.nowMs() });
  const app = createApp({
    config: makeConfig({ pro: { concurrency: 3 } }, { acme: "pro" }),
    limiter,
    clock,
    forwarder: new Simulator({ errorRate: 1, sleep: noSleep }),
  });
  const response = await app.request("/v1/monitor/chatgpt?prompt=x", {
    method: "POST",
    headers: { authorization: `Bearer ${testKey("acme")}` },
  });
  assert.equal(response.status, 502);
  const body = await response.json();
  assert.equal(body.success, false);
  assert.equal(body.error.code, "UPSTREAM_ERROR");
  assert.equal(body.error.details.simulated, true);
  assert.equal(new Date(body.error.timestamp).toISOString(), body.error.timestamp);
  assert.equal(response.headers.get("x-concurrent-limit"), "3");
  assert.equal(limiter.slotsInUse("acme"), 0);
});
