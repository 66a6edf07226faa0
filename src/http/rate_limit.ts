/**
 * @module
 * The request-rate limit on every authenticated `/v1/*` call, and the headers
 * that tell clients where they stand: `X-RateLimit-*` plus the IETF draft-11
 * `RateLimit-Policy` / `RateLimit` structured fields. The admission decision
 * uses the one clock read of the request (`nowMs`); a denial becomes a 429
 * here and nowhere else. In shadow mode the decision is made and reported but
 * the request goes through.
 */

import type { Context, MiddlewareHandler } from "hono";
import type { Limiter } from "../limits/limiter.ts";
import type { GatewayEnv, RateInfo, SlotInfo } from "./context.ts";
import { slotHeaders } from "./concurrency.ts";
import { HttpError } from "./errors.ts";
import { endpointOf, rateBucketKey } from "../limits/bucket_keys.ts";
import { DEFAULT_PROVIDERS } from "../upstream/simulator.ts";

/** Options for {@linkcode rateLimit}. */
export interface RateLimitOptions {
  limiter: Limiter;
  /** Global shadow mode: decide, report, never reject. */
  shadow?: boolean;
  /** Known monitor providers (endpoint scope counts the rest as `monitor/other`). */
  providers?: ReadonlySet<string>;
}

/** The rate bucket a request counts against, by the plan's scope. */
export function requestBucketKey(c: Context<GatewayEnv>, providers: ReadonlySet<string>): string {
  const account = c.get("account");
  const scope = account.plan.rateLimit.scope;
  return rateBucketKey(
    account.id,
    scope,
    scope === "key" ? c.get("keyOwner").keyId : "",
    scope === "endpoint" ? endpointOf(c.req.path, providers) : "",
  );
}

/** Counts the request against its window; 429 when the window is full. */
export function rateLimit(options: RateLimitOptions): MiddlewareHandler<GatewayEnv> {
  const { limiter, shadow = false, providers = new Set(DEFAULT_PROVIDERS) } = options;
  return async function rateLimit(c, next) {
    const nowMs = c.get("nowMs");
    const plan = c.get("account").plan;
    const bucketKey = requestBucketKey(c, providers);
    const remaining = limiter.tryAdmit(bucketKey, plan.rateLimit, nowMs);
    const shadowed = remaining < 0 && (shadow || plan.shadow);
    const rate: RateInfo = {
      limit: plan.rateLimit.requests,
      remaining: Math.max(0, remaining),
      windowMs: plan.rateLimit.windowMs,
      bucketKey,
      shadowed,
    };
    c.set("rate", rate);
    if (shadowed) c.set("decision", "shadow");
    if (remaining < 0 && !shadowed) {
      c.set("decision", "rate");
      const retryAfterSeconds = Math.max(
        1,
        Math.ceil(limiter.msUntilFree(bucketKey, nowMs) / 1000),
      );
      const slot = slotView(c, limiter);
      throw new HttpError(429, "RATE_LIMIT_EXCEEDED", "request rate limit exceeded", {
        details: { limit: rate.limit, windowMs: rate.windowMs, retryAfterSeconds },
        headers: {
          ...rateHeaders(rate, retryAfterSeconds, slot),
          ...(slot === undefined ? {} : slotHeaders(slot)),
          "retry-after": String(retryAfterSeconds),
          "x-ratelimit-reset": String(retryAfterSeconds),
        },
      });
    }
    await next();
    const resetSeconds = Math.ceil(
      limiter.msUntilFree(bucketKey, nowMs, rate.remaining + 1) / 1000,
    );
    const headers = c.res.headers;
    const slot = c.get("slot") ?? slotView(c, limiter);
    for (const [name, value] of Object.entries(rateHeaders(rate, resetSeconds, slot))) {
      headers.set(name, value);
    }
    if (slot !== undefined && c.get("slot") === undefined) {
      // Refused before the concurrency step (413, ...): still say where the slots stand.
      for (const [name, value] of Object.entries(slotHeaders(slot))) headers.set(name, value);
    }
  };
}

/** On monitor routes, the account's slots as they are now (no slot taken). */
function slotView(c: Context<GatewayEnv>, limiter: Limiter): SlotInfo | undefined {
  if (!c.req.path.startsWith("/v1/monitor/")) return undefined;
  const account = c.get("account");
  return {
    limit: account.plan.concurrency,
    current: limiter.slotsInUse(account.id),
    lease: undefined,
    shadowed: false,
  };
}

/**
 * The rate headers for `rate`, with the window freeing one in `resetSeconds`;
 * with `slot` (monitor routes) the draft fields carry a second,
 * `qu="concurrent-requests"` policy.
 */
export function rateHeaders(
  rate: RateInfo,
  resetSeconds: number,
  slot: SlotInfo | undefined,
): Record<string, string> {
  const windowSeconds = Math.max(1, Math.ceil(rate.windowMs / 1000));
  let policy = `"requests";q=${rate.limit};w=${windowSeconds}`;
  let state = `"requests";r=${rate.remaining};t=${resetSeconds}`;
  if (slot !== undefined) {
    policy += `, "concurrency";q=${slot.limit};qu="concurrent-requests"`;
    state += `, "concurrency";r=${Math.max(0, slot.limit - slot.current)}`;
  }
  return {
    "x-ratelimit-limit": String(rate.limit),
    "x-ratelimit-remaining": String(rate.remaining),
    "ratelimit-policy": policy,
    "ratelimit": state,
  };
}
