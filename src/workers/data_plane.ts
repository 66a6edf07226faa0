/**
 * @module
 * One data-plane worker isolate. It serves the hot routes (`/v1/monitor/*`,
 * `/v1/limits`, other `/v1/*`, `/healthz`) on the shared port against the
 * limiter tables the main isolate shares with it, so rate windows and slots
 * stay exact across isolates. Control-plane routes (admin, async tasks,
 * dashboard, metrics, readiness, OpenAPI) are passed through to the main
 * isolate's private listener untouched. Log records and freed-slot notices go
 * back to the main isolate in batches, off the request path.
 */

import type { OpenAPIHono } from "@hono/zod-openapi";
import { createApp, type Lifecycle } from "../http/app.ts";
import type { GatewayEnv } from "../http/context.ts";
import type { RequestSink } from "../http/observe.ts";
import type { Clock } from "../limits/clock.ts";
import { Limiter } from "../limits/limiter.ts";
import type { RequestRecord } from "../observe/request_log.ts";
import { buildSnapshot, ConfigStore } from "../plans/snapshot.ts";
import { endToEndHeaders } from "../upstream/forward_headers.ts";
import { chooseForwarder } from "../upstream/choose_forwarder.ts";
import type { ConfigMessage, FromWorker, ToWorker } from "./protocol.ts";

/** Control-plane paths a worker passes through to the main isolate. */
export const CONTROL_PATHS =
  /^\/(admin(\/|$)|dashboard(\/|$)|v1\/async(\/|$)|metrics$|readyz$|openapi\.json$)/;

/** Header the main isolate's private listener reads the client address from. */
export const CLIENT_ADDRESS_HEADER = "x-sluice-client-address";

/** Records batched per flush at most; beyond that they are dropped and counted. */
const MAX_PENDING_RECORDS = 65_536;

/** A running data plane: its app, its lifecycle, and its message handling. */
export interface WorkerPlane {
  app: OpenAPIHono<GatewayEnv>;
  lifecycle: Lifecycle & { draining: boolean };
  /** Applies a message from the main isolate. */
  receive(message: ToWorker): void;
  /** Reclaims overdue leases, then sends pending records and lease counts to the main isolate. */
  flush(): void;
}

/** Builds the worker's data plane from its `init` message. */
export function createWorkerPlane(
  init: Extract<ToWorker, { type: "init" }>,
  clock: Clock,
  post: (message: FromWorker) => void,
): WorkerPlane {
  const { settings, index } = init;
  const config = new ConfigStore(snapshotOf(init.config, clock));
  const limiter = new Limiter({
    shared: init.tables,
    leaseMs: settings.leaseMs,
    epochMs: settings.epochMs,
  });
  limiter.importAssignment(init.config.assignment);
  // Failed-auth counting stays per isolate: it is a coarse flood guard, not a plan limit.
  const authLimiter = new Limiter({
    windowCapacity: 8192,
    semaphoreCapacity: 1,
    epochMs: settings.epochMs,
  });
  const queueDepths = new Int32Array(init.queueDepths);
  const forwarder = chooseForwarder(settings);

  let pending: [RequestRecord, number][] = [];
  let dropped = 0;
  const sink: RequestSink = (record, flags) => {
    if (pending.length >= MAX_PENDING_RECORDS) dropped++;
    else pending.push([record, flags]);
  };

  const freed = new Set<string>();
  limiter.leases.onRelease((lease) => {
    if (freed.size === 0) {
      queueMicrotask(() => {
        post({ type: "released", accounts: [...freed] });
        freed.clear();
      });
    }
    freed.add(lease.owner);
  });

  const lifecycle = { draining: false };
  const app = createApp({
    config,
    limiter,
    authLimiter,
    clock,
    forwarder,
    lifecycle,
    maxBodyBytes: settings.maxBodyBytes,
    shadow: settings.shadow,
    authFailuresPerMinute: settings.authFailuresPerMinute,
    observe: { sink },
    queueDepth: (accountId) => {
      const at = limiter.semaphoreIndex(
        accountId,
        config.current.accounts.get(accountId)?.plan.concurrency ?? 0,
      );
      return Atomics.load(queueDepths, at);
    },
    controlPlane: {
      paths: CONTROL_PATHS,
      forward: (request, clientAddress) => passThrough(settings.controlUrl, request, clientAddress),
    },
  });

  return {
    app,
    lifecycle,
    receive(message) {
      if (message.type === "config") {
        config.replace(snapshotOf(message, clock), "main");
        limiter.importAssignment(message.assignment);
        post({ type: "ack", index, seq: message.seq });
      } else if (message.type === "drain") {
        lifecycle.draining = true;
      }
    },
    flush() {
      // The last line of defence runs here too: this isolate's overdue leases.
      limiter.leases.reclaimOverdue(clock.nowMs());
      if (pending.length > 0 || dropped > 0) {
        post({ type: "records", index, batch: pending, dropped });
        pending = [];
        dropped = 0;
      }
      const stats = limiter.leases.stats();
      post({ type: "stats", index, ...stats });
    },
  };
}

function snapshotOf(message: ConfigMessage, clock: Clock) {
  const built = buildSnapshot(message.document, new Date(clock.nowMs()));
  if (!built.ok) throw new Error(`main sent an invalid config: ${JSON.stringify(built.errors)}`);
  return built.snapshot;
}

/** Forwards a control-plane request to the main isolate, headers and body as they are. */
async function passThrough(
  controlUrl: string,
  request: Request,
  clientAddress: string | undefined,
): Promise<Response> {
  const url = new URL(request.url);
  const target = new URL(url.pathname + url.search, controlUrl);
  const headers = endToEndHeaders(request.headers, ["host", "content-length"]);
  if (clientAddress !== undefined) headers.set(CLIENT_ADDRESS_HEADER, clientAddress);
  const hasBody = request.body !== null && request.method !== "GET" && request.method !== "HEAD";
  const response = await fetch(target, {
    method: request.method,
    headers,
    body: hasBody ? request.body : null,
    signal: request.signal,
    redirect: "manual",
  });
  return new Response(response.body, {
    status: response.status,
    statusText: response.statusText,
    headers: endToEndHeaders(response.headers),
  });
}
