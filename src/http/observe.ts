/**
 * @module
 * Records every request once its response is ready: a line in the request
 * log ring, the request metrics, and the dashboard's per-account counters.
 * Nothing here waits: the log is an in-memory ring drained elsewhere.
 */

import type { MiddlewareHandler } from "hono";
import type { Clock } from "../limits/clock.ts";
import type { GatewayMetrics } from "../observe/gateway_metrics.ts";
import type { RequestLog, RequestRecord } from "../observe/request_log.ts";
import type { TrafficStats } from "../observe/traffic_stats.ts";
import type { GatewayEnv } from "./context.ts";

/** Options for {@linkcode observeRequests}. */
export interface ObserveOptions {
  clock: Clock;
  log?: RequestLog | undefined;
  metrics?: GatewayMetrics | undefined;
  stats?: TrafficStats | undefined;
  /** Replaces log/metrics/stats (a worker isolate batches records to the main one). */
  sink?: RequestSink | undefined;
}

const ROUTES: [RegExp, string][] = [
  [/^\/v1\/monitor\/[^/]+\/?$/, "/v1/monitor/:provider"],
  [/^\/v1\/async\/task\/batch$/, "/v1/async/task/batch"],
  [/^\/v1\/async\/task\/[^/]+$/, "/v1/async/task/:id"],
  [/^\/v1\/async\/(task|status|queue)$/, "/v1/async/$1"],
  [/^\/v1\/limits$/, "/v1/limits"],
  [/^\/v1\//, "/v1/*"],
  [/^\/admin\//, "/admin/*"],
  [/^\/dashboard(\/.*)?$/, "/dashboard"],
  [/^\/(healthz|readyz|metrics|openapi\.json)$/, "/$1"],
];

/** A bounded route label for `path` (the template, never the raw path). */
export function routeLabel(path: string): string {
  for (const [pattern, label] of ROUTES) {
    const match = pattern.exec(path);
    if (match) return label.replace("$1", match[1] ?? "");
  }
  return "other";
}

/** Flags that travel with a record to the metrics, not into the log line. */
export const RATE_SHADOWED = 1;
/** The concurrency limit was exceeded but shadow mode let the request through. */
export const SLOT_SHADOWED = 2;
/** Admitted with 20% or less of the rate window left. */
export const NEAR_LIMIT = 4;

/** Where finished requests go: the log ring, metrics and dashboard counters. */
export type RequestSink = (record: RequestRecord, flags: number) => void;

/** The sink that logs, counts and feeds the dashboard (each part optional). */
export function requestSink(
  parts: {
    log?: RequestLog | undefined;
    metrics?: GatewayMetrics | undefined;
    stats?: TrafficStats | undefined;
  },
): RequestSink {
  const { log, metrics, stats } = parts;
  return function sink(record, flags) {
    if (metrics !== undefined) {
      const route = routeLabel(record.path);
      metrics.requests.inc({ route, status: String(record.status) });
      metrics.latency.observe(record.latencyMs / 1000, { route });
      const plan = record.plan ?? "";
      if (record.decision === "rate" || (flags & RATE_SHADOWED) !== 0) {
        metrics.rateLimited.inc({ plan });
      }
      if (record.decision === "concurrency" || (flags & SLOT_SHADOWED) !== 0) {
        metrics.concurrencyRejected.inc({ plan });
      }
      if ((flags & NEAR_LIMIT) !== 0) metrics.nearLimit.inc({ plan });
    }
    if (record.accountId !== null) stats?.record(record.accountId, record.decision, record.timeMs);
    log?.push(record);
  };
}

/** Records each request once it is answered; nothing here waits. */
export function observeRequests(options: ObserveOptions): MiddlewareHandler<GatewayEnv> {
  const { clock, log, metrics, stats } = options;
  const sink = options.sink ?? requestSink({ log, metrics, stats });
  return async function observeRequests(c, next) {
    await next();
    const nowMs = clock.nowMs();
    const account = c.get("account");
    const decision = c.get("decision") ?? (account === undefined ? "none" : "admitted");
    const rate = c.get("rate");
    let flags = 0;
    if (rate?.shadowed === true) flags |= RATE_SHADOWED;
    if (c.get("slot")?.shadowed === true) flags |= SLOT_SHADOWED;
    if (decision === "admitted" && rate !== undefined && rate.remaining <= rate.limit * 0.2) {
      flags |= NEAR_LIMIT;
    }
    sink({
      timeMs: nowMs,
      requestId: c.get("requestId"),
      accountId: account?.id ?? null,
      keyId: c.get("keyOwner")?.keyId ?? null,
      plan: account?.plan.name ?? null,
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      latencyMs: Math.max(0, nowMs - c.get("nowMs")),
      decision,
    }, flags);
  };
}
