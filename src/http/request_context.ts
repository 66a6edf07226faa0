/**
 * @module
 * First middleware of every request: reads the clock once, settles the
 * request id (echoing a sane incoming `X-Request-ID`) and stamps
 * `X-Request-ID` and `X-Latency-Ms` on whatever response comes back.
 */

import type { MiddlewareHandler } from "hono";
import type { Clock } from "../limits/clock.ts";
import type { GatewayEnv } from "./context.ts";

const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Options for {@linkcode requestContext}. */
export interface RequestContextOptions {
  clock: Clock;
}

/** Sets `requestId` and `nowMs` and the two response headers. */
export function requestContext(options: RequestContextOptions): MiddlewareHandler<GatewayEnv> {
  const { clock } = options;
  return async function requestContext(c, next) {
    const startMs = clock.nowMs();
    const incoming = c.req.header("x-request-id");
    const requestId = incoming !== undefined && SANE_REQUEST_ID.test(incoming)
      ? incoming
      : crypto.randomUUID();
    c.set("requestId", requestId);
    c.set("nowMs", startMs);
    await next();
    c.res.headers.set("x-request-id", requestId);
    c.res.headers.set("x-latency-ms", String(Math.max(0, clock.nowMs() - startMs)));
  };
}
