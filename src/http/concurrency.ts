/**
 * @module
 * The hard concurrency limit on monitor calls. A request takes one slot of
 * its account's semaphore or gets `429 CONCURRENCY_LIMIT_EXCEEDED` at once:
 * nothing is queued. The slot is a lease held until the response body has
 * been sent (see `hold_until_sent.ts`), so every way out of the request gives
 * it back exactly once.
 */

import type { MiddlewareHandler } from "hono";
import type { Limiter } from "../limits/limiter.ts";
import type { GatewayEnv, SlotInfo } from "./context.ts";
import { HttpError } from "./errors.ts";
import { holdUntilSent } from "./hold_until_sent.ts";

/** Options for {@linkcode concurrencyLimit}. */
export interface ConcurrencyLimitOptions {
  limiter: Limiter;
  /** Global shadow mode: decide, report, never reject. */
  shadow?: boolean;
}

/** Holds one plan slot for the whole life of the request. */
export function concurrencyLimit(options: ConcurrencyLimitOptions): MiddlewareHandler<GatewayEnv> {
  const { limiter, shadow = false } = options;
  return async function concurrencyLimit(c, next) {
    const account = c.get("account");
    const limit = account.plan.concurrency;
    const index = limiter.semaphoreIndex(account.id, limit);
    const lease = limiter.leases.tryAcquire(index, c.get("nowMs"), account.id);
    const current = lease?.inUseAtAcquire ?? limiter.semaphores.inUse(index);
    const slot: SlotInfo = {
      limit,
      current,
      lease,
      shadowed: lease === undefined && (shadow || account.plan.shadow),
    };
    c.set("slot", slot);
    if (slot.shadowed) c.set("decision", "shadow");
    const headers = slotHeaders(slot);
    if (lease === undefined && !slot.shadowed) {
      c.set("decision", "concurrency");
      throw new HttpError(429, "CONCURRENCY_LIMIT_EXCEEDED", "all concurrency slots are in use", {
        details: { limit, current },
        headers,
      });
    }
    try {
      await next();
    } finally {
      if (lease !== undefined) {
        if (c.req.raw.signal.aborted) lease.release("aborted");
        else c.res = holdUntilSent(c.res, lease);
      }
    }
    for (const [name, value] of Object.entries(headers)) c.res.headers.set(name, value);
  };
}

/** The `X-Concurrent-*` headers (the draft-11 fields are set by `rate_limit.ts`). */
export function slotHeaders(slot: SlotInfo): Record<string, string> {
  return {
    "x-concurrent-limit": String(slot.limit),
    "x-concurrent-current": String(slot.current),
    "x-concurrent-remaining": String(Math.max(0, slot.limit - slot.current)),
  };
}
