/**
 * @module
 * Records every request once its response is ready: a line in the request
 * log ring, the request metrics, and the dashboard's per-account counters.
 * Nothing here waits: the log is an in-memory ring drained elsewhere.
 */

import type { MiddlewareHandler } from "hono";
import type { Clock } from "../limits/clock.ts";
import type { GatewayMetrics } from "../observe/gateway_metrics.ts";
import type { RequestLog } from "../observe/request_log.ts";
import type { TrafficStats } from "../observe/traffic_stats.ts";
import type { GatewayEnv } from "./context.ts";

/** Options for {@linkcode observeRequests}. */
export interface ObserveOptions {
  clock: Clock;
  log?: RequestLog | undefined;
  metrics?: GatewayMetrics | undefined;
  stats?: TrafficStats | undefined;
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

/** Logs and counts each request after it is answered. */
export function observeRequests(options: ObserveOptions): MiddlewareHandler<GatewayEnv> {
  const { clock, log, metrics, stats } = options;
  return async function observeRequests(c, next) {
    await next();
    const nowMs = clock.nowMs();
    const latencyMs = Math.max(0, nowMs - c.get("nowMs"));
    const account = c.get("account");
    const decision = c.get("decision") ?? (account === undefined ? "none" : "admitted");
    const status = c.res.status;
    const route = routeLabel(c.req.path);
    if (metrics !== undefined) {
      metrics.requests.inc({ route, status: String(status) });
      metrics.latency.observe(latencyMs / 1000, { route });
      const plan = account?.plan.name ?? "";
      if (decision === "rate" || c.get("rate")?.shadowed === true) {
        metrics.rateLimited.inc({ plan });
      }
      if (decision === "concurrency" || c.get("slot")?.shadowed === true) {
        metrics.concurrencyRejected.inc({ plan });
      }
      const rate = c.get("rate");
      if (decision === "admitted" && rate !== undefined && rate.remaining <= rate.limit * 0.2) {
        metrics.nearLimit.inc({ plan });
      }
    }
    if (account !== undefined) stats?.record(account.id, decision, nowMs);
    log?.push({
      timeMs: nowMs,
      requestId: c.get("requestId"),
      accountId: account?.id ?? null,
      keyId: c.get("keyOwner")?.keyId ?? null,
      method: c.req.method,
      path: c.req.path,
      status,
      latencyMs,
      decision,
    });
  };
}
