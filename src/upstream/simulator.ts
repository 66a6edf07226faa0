/**
 * @module
 * The built-in upstream (SPEC §7): answers `/v1/monitor/:provider` after a
 * random latency with a plausible JSON answer derived from the prompt, fails
 * at a configurable rate, and gives up at once when the client goes away. It
 * makes the gateway a complete demo with no other process.
 */

import { HttpError } from "../http/errors.ts";
import { readLimited } from "./body_limit.ts";
import type { ForwardContext, Forwarder } from "./forwarder.ts";

/** Options for {@linkcode Simulator}. */
export interface SimulatorOptions {
  /** Latency range, ms (inclusive). */
  latencyMs?: { min: number; max: number };
  /** Share of calls that fail with 502, 0..1. */
  errorRate?: number;
  /** Known providers (lowercase path names). */
  providers?: readonly string[];
  /** Random numbers in [0, 1). */
  random?: () => number;
  /** Waits `ms` or rejects when `signal` aborts. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  maxBodyBytes?: number;
}

/** The default providers (SPEC §5), as path names. */
export const DEFAULT_PROVIDERS = [
  "chatgpt",
  "perplexity",
  "gemini",
  "copilot",
  "aimode",
  "aioverview",
  "google",
  "google_news",
  "grok",
] as const;

/** Waits `ms`, or rejects with the signal's reason when it aborts first. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    function onAbort() {
      clearTimeout(timer);
      reject(signal.reason);
    }
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

/** A fake upstream for monitor calls. */
export class Simulator implements Forwarder {
  readonly servesAnyPath = false;
  #min: number;
  #max: number;
  #errorRate: number;
  #providers: ReadonlySet<string>;
  #random: () => number;
  #sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  #maxBodyBytes: number;

  constructor(options: SimulatorOptions = {}) {
    const {
      latencyMs = { min: 200, max: 1500 },
      errorRate = 0,
      providers = DEFAULT_PROVIDERS,
      random = Math.random,
      sleep = abortableSleep,
      maxBodyBytes = 1_048_576,
    } = options;
    this.#min = latencyMs.min;
    this.#max = latencyMs.max;
    this.#errorRate = errorRate;
    this.#providers = new Set(providers);
    this.#random = random;
    this.#sleep = sleep;
    this.#maxBodyBytes = maxBodyBytes;
  }

  async forward(request: Request, context: ForwardContext): Promise<Response> {
    const url = new URL(request.url);
    const match = /^\/v1\/monitor\/([^/]+)\/?$/.exec(url.pathname);
    const provider = match?.[1]?.toLowerCase();
    if (provider === undefined || !this.#providers.has(provider)) {
      throw new HttpError(404, "RESOURCE_NOT_FOUND", `no such monitor provider: ${url.pathname}`, {
        details: { providers: [...this.#providers] },
      });
    }
    const prompt = await promptOf(request, url, this.#maxBodyBytes);
    const latencyMs = Math.round(this.#min + this.#random() * (this.#max - this.#min));
    await this.#sleep(latencyMs, context.signal);
    if (this.#random() < this.#errorRate) {
      throw new HttpError(502, "UPSTREAM_ERROR", "the simulated upstream failed", {
        details: { provider, simulated: true },
      });
    }
    const body = JSON.stringify({
      success: true,
      result: answerFor(provider, prompt),
      meta: { provider, latencyMs, simulated: true, requestId: context.requestId },
    });
    return new Response(body, { headers: { "content-type": "application/json; charset=utf-8" } });
  }
}

async function promptOf(request: Request, url: URL, maxBodyBytes: number): Promise<string> {
  const fromQuery = url.searchParams.get("prompt") ?? url.searchParams.get("q");
  if (request.body === null) return fromQuery ?? "";
  const bytes = await readLimited(request.body, maxBodyBytes);
  if (bytes.byteLength === 0) return fromQuery ?? "";
  try {
    const value: unknown = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof value === "object" && value !== null && "prompt" in value) {
      return String(value.prompt).slice(0, 2000);
    }
  } catch {
    // Not JSON: the body itself is the prompt.
    return new TextDecoder().decode(bytes).slice(0, 2000);
  }
  return fromQuery ?? "";
}

/** A deterministic, plausible answer for `prompt`. */
export function answerFor(provider: string, prompt: string): { text: string; sources: object[] } {
  const topic = prompt.trim() === "" ? "your brand" : prompt.trim().replace(/\s+/g, " ");
  const words = topic.toLowerCase().split(" ").filter((w) => /^[a-z0-9-]{3,}$/.test(w)).slice(0, 3);
  const slug = words.length > 0 ? words.join("-") : "overview";
  return {
    text: `According to ${provider}, "${topic}" is discussed most often in comparisons and ` +
      `reviews. The leading sources agree on its main points and differ on pricing.`,
    sources: [
      { title: `${topic}: an overview`, url: `https://example.com/${slug}`, rank: 1 },
      {
        title: `Comparing options for ${topic}`,
        url: `https://example.org/${slug}/compare`,
        rank: 2,
      },
      { title: `${topic} reviews`, url: `https://example.net/reviews/${slug}`, rank: 3 },
    ],
  };
}
