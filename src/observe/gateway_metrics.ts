/**
 * @module
 * The gateway's metric families (SPEC §8): what the request path increments
 * (requests by route and status, limit rejections, near-limit, latency) and
 * what is read from its owner at scrape time (slots in use and queue depth per
 * account, lease reclaims, plan reloads, dropped log records).
 */

import type { Limiter } from "../limits/limiter.ts";
import type { ConfigStore } from "../plans/snapshot.ts";
import { type Counter, type Histogram, Registry } from "./metrics.ts";
import type { RequestLog } from "./request_log.ts";

/** Sources read at scrape time; each may be absent (then its series are empty). */
export interface MetricSources {
  limiter: Limiter;
  config: ConfigStore;
  queueDepth?: (accountId: string) => number;
  reloads?: () => { applied: number; invalid: number };
  log?: RequestLog;
  /** Leases reclaimed in other isolates. */
  extraReclaimed?: () => number;
}

/** The families the request path and the control plane update. */
export interface GatewayMetrics {
  registry: Registry;
  requests: Counter;
  rateLimited: Counter;
  concurrencyRejected: Counter;
  nearLimit: Counter;
  webhookDeliveries: Counter;
  latency: Histogram;
  isolateRequests: Counter;
}

/** Latency buckets, seconds: sub-millisecond gateway answers to minutes upstream. */
export const LATENCY_BUCKETS_S = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
  60,
  300,
];

/** Builds the registry with every family. */
export function createGatewayMetrics(sources: MetricSources): GatewayMetrics {
  const { limiter, config, queueDepth, reloads, log, extraReclaimed } = sources;
  const registry = new Registry();
  const metrics: GatewayMetrics = {
    registry,
    requests: registry.counter("sluice_requests_total", "Requests by route and status."),
    rateLimited: registry.counter(
      "sluice_rate_limited_total",
      "Requests rejected (or, in shadow mode, flagged) by the rate limit, by plan.",
    ),
    concurrencyRejected: registry.counter(
      "sluice_concurrency_rejected_total",
      "Monitor requests rejected (or flagged in shadow mode) for concurrency, by plan.",
    ),
    nearLimit: registry.counter(
      "sluice_near_limit_total",
      "Admitted requests that left 20% or less of the rate window, by plan.",
    ),
    webhookDeliveries: registry.counter(
      "sluice_webhook_deliveries_total",
      "Webhook delivery attempts by outcome.",
    ),
    isolateRequests: registry.counter(
      "sluice_isolate_requests_total",
      "Requests answered per data-plane isolate (0 is the main isolate).",
    ),
    latency: registry.histogram(
      "sluice_request_duration_seconds",
      "Gateway time to response headers, by route.",
      LATENCY_BUCKETS_S,
    ),
  };
  registry.collect(
    "sluice_slots_in_use",
    "Concurrency slots held, by account.",
    "gauge",
    () =>
      [...config.current.accounts.values()].map((a) => [
        { account: a.id, plan: a.plan.name },
        limiter.slotsInUse(a.id),
      ]),
  );
  registry.collect(
    "sluice_slots_limit",
    "Concurrency slots of the plan, by account.",
    "gauge",
    () =>
      [...config.current.accounts.values()].map((a) => [
        { account: a.id, plan: a.plan.name },
        a.plan.concurrency,
      ]),
  );
  registry.collect(
    "sluice_queue_depth",
    "QUEUED async tasks, by account.",
    "gauge",
    () =>
      queueDepth === undefined
        ? []
        : [...config.current.accounts.keys()].map((id) => [{ account: id }, queueDepth(id)]),
  );
  registry.collect(
    "sluice_lease_reclaims_total",
    "Slots reclaimed at their lease deadline (leaks caught).",
    "counter",
    () => [[{}, limiter.leases.stats().reclaimed + (extraReclaimed?.() ?? 0)]],
  );
  registry.collect("sluice_plan_reloads_total", "Plans file reloads by result.", "counter", () => {
    const counts = reloads?.() ?? { applied: 0, invalid: 0 };
    return [[{ result: "applied" }, counts.applied], [{ result: "invalid" }, counts.invalid]];
  });
  registry.collect(
    "sluice_log_records_dropped_total",
    "Request log records dropped because the writer fell behind.",
    "counter",
    () => [[{}, log?.dropped ?? 0]],
  );
  registry.collect(
    "sluice_log_records_written_total",
    "Request log records written.",
    "counter",
    () => [[{}, log?.written ?? 0]],
  );
  return metrics;
}
