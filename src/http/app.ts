/**
 * @module
 * The gateway's HTTP application. Order of work for `/v1/*`: request context
 * (id, clock read) → API-key auth → rate limit → body size → (monitor routes)
 * concurrency slot → forward to the upstream or the simulator. Errors from any
 * step are rendered by one handler into the one envelope. Routes are declared
 * with zod schemas, which also generate `GET /openapi.json`.
 */

import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { Clock } from "../limits/clock.ts";
import type { Limiter } from "../limits/limiter.ts";
import type { ConfigStore } from "../plans/snapshot.ts";
import { payloadTooLarge } from "../upstream/body_limit.ts";
import type { Forwarder } from "../upstream/forwarder.ts";
import { apiKeyAuth } from "./auth.ts";
import { concurrencyLimit } from "./concurrency.ts";
import type { GatewayEnv } from "./context.ts";
import { errorResponse, HttpError, toHttpError } from "./errors.ts";
import { rateLimit } from "./rate_limit.ts";
import { requestContext } from "./request_context.ts";
import { type AdminOptions, adminRoutes } from "./admin.ts";
import { validationHook } from "./validation.ts";
import { asyncRoutes } from "./async_routes.ts";
import type { TaskService } from "../tasks/task_service.ts";
import { bodyLimit } from "hono/body-limit";
import type { GatewayMetrics } from "../observe/gateway_metrics.ts";
import type { RequestLog } from "../observe/request_log.ts";
import type { TrafficStats } from "../observe/traffic_stats.ts";
import { observeRequests, type RequestSink } from "./observe.ts";
import type { DashboardFeed } from "../observe/dashboard_feed.ts";
import { dashboardRoutes } from "./dashboard_routes.ts";

/** Whether the process should take traffic, and why not. */
export interface Lifecycle {
  readonly draining: boolean;
}

/** Everything the app needs, passed in by `main.ts` (or a test). */
export interface AppOptions {
  config: ConfigStore;
  limiter: Limiter;
  clock: Clock;
  forwarder: Forwarder;
  lifecycle?: Lifecycle;
  maxBodyBytes?: number;
  shadow?: boolean;
  /** Counts failed authentications per IP (default: `limiter`). */
  authLimiter?: Limiter;
  /** QUEUED tasks of an account, where the task service lives elsewhere (a worker). */
  queueDepth?: (accountId: string) => number;
  /** In a worker isolate: paths answered by the main isolate, and how to reach it. */
  controlPlane?: {
    paths: RegExp;
    forward: (request: Request, clientAddress: string | undefined) => Promise<Response>;
  };
  /** Failed auth attempts allowed per client IP per minute. */
  authFailuresPerMinute?: number;
  /** Request log, metrics and dashboard counters; absent in tests that do not need them. */
  observe?: {
    log?: RequestLog;
    metrics?: GatewayMetrics;
    stats?: TrafficStats;
    sink?: RequestSink;
  };
  /** The async task API; absent in tests that do not need it. */
  tasks?: { service: TaskService; taskTypes: readonly string[] };
  /** The admin API; absent in tests that do not need it. */
  admin?: Omit<AdminOptions, "config" | "limiter" | "clock">;
  /** The live dashboard at `/dashboard`; absent in tests that do not need it. */
  dashboard?: { feed: DashboardFeed; token: string };
  /** Called with unexpected errors (500s), for logging. */
  onUnexpectedError?: (error: unknown, requestId: string) => void;
}

const ErrorSchema = z.object({
  success: z.literal(false),
  error: z.object({
    code: z.string(),
    message: z.string(),
    details: z.record(z.string(), z.unknown()).optional(),
    timestamp: z.string(),
  }),
}).openapi("Error");

const LimitsSchema = z.object({
  success: z.literal(true),
  account: z.object({ id: z.string(), plan: z.string() }),
  plan: z.object({
    name: z.string(),
    concurrency: z.number().int(),
    rateLimit: z.object({
      requests: z.number().int(),
      windowMs: z.number().int(),
      scope: z.enum(["account", "key", "endpoint"]),
    }),
    queueLimit: z.number().int(),
    shadow: z.boolean(),
  }),
  rate: z.object({
    limit: z.number().int(),
    remaining: z.number().int(),
    used: z.number().int(),
    windowMs: z.number().int(),
  }),
  concurrency: z.object({ used: z.number().int(), max: z.number().int() }),
  queue: z.object({ queued: z.number().int(), limit: z.number().int() }),
}).openapi("Limits");

const errorResponses = {
  401: { description: "missing, malformed or unknown API key", content: json(ErrorSchema) },
  429: { description: "rate or concurrency limit exceeded", content: json(ErrorSchema) },
} as const;

function json<T>(schema: T) {
  return { "application/json": { schema } };
}

const security = [{ bearer: [] }];

const healthRoute = createRoute({
  method: "get",
  path: "/healthz",
  responses: {
    200: { description: "alive", content: json(z.object({ status: z.literal("ok") })) },
  },
});

const readyRoute = createRoute({
  method: "get",
  path: "/readyz",
  responses: {
    200: {
      description: "ready: plans loaded, not draining",
      content: json(
        z.object({ status: z.literal("ready"), details: z.record(z.string(), z.unknown()) }),
      ),
    },
    503: { description: "not ready", content: json(ErrorSchema) },
  },
});

const limitsRoute = createRoute({
  method: "get",
  path: "/v1/limits",
  security,
  responses: {
    200: { description: "the caller's plan and usage", content: json(LimitsSchema) },
    ...errorResponses,
  },
});

const monitorRoute = createRoute({
  method: "post",
  path: "/v1/monitor/{provider}",
  security,
  description:
    "Any method. Rate limit, then one concurrency slot held until the response is sent, " +
    "then forwarded to the upstream (or answered by the simulator).",
  request: {
    params: z.object({
      provider: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/).openapi({ example: "chatgpt" }),
    }),
  },
  responses: {
    200: { description: "the upstream's answer, streamed" },
    ...errorResponses,
    502: { description: "upstream unreachable or failed", content: json(ErrorSchema) },
    504: { description: "upstream timed out", content: json(ErrorSchema) },
  },
});

/** Builds the gateway app. */
export function createApp(options: AppOptions): OpenAPIHono<GatewayEnv> {
  const {
    config,
    limiter,
    clock,
    forwarder,
    lifecycle = { draining: false },
    maxBodyBytes = 1_048_576,
    shadow = false,
    authFailuresPerMinute = 30,
    onUnexpectedError = () => {},
    admin,
    tasks,
    observe,
    dashboard,
    authLimiter = limiter,
    queueDepth,
    controlPlane,
  } = options;

  const app = new OpenAPIHono<GatewayEnv>({ defaultHook: validationHook });

  app.onError((error, c) => {
    const httpError = toHttpError(error);
    if (httpError.status >= 500 && !(error instanceof HttpError)) {
      onUnexpectedError(error, c.get("requestId"));
    }
    return errorResponse(httpError, new Date(clock.nowMs()));
  });
  app.notFound((c) => {
    return errorResponse(
      new HttpError(404, "RESOURCE_NOT_FOUND", `no route for ${c.req.method} ${c.req.path}`),
      new Date(clock.nowMs()),
    );
  });

  if (controlPlane !== undefined) {
    // Before everything else: the main isolate logs, limits and answers these itself.
    app.use("*", async function controlPassThrough(c, next) {
      if (!controlPlane.paths.test(c.req.path)) return await next();
      try {
        c.res = await controlPlane.forward(c.req.raw, c.env?.remoteAddr?.hostname);
      } catch (error) {
        c.res = errorResponse(
          new HttpError(503, "SERVICE_UNAVAILABLE", "the control plane is not reachable", {
            headers: { "retry-after": "1" },
            cause: error,
          }),
          new Date(clock.nowMs()),
        );
      }
    });
  }
  app.use("*", requestContext({ clock }));
  app.use("*", observeRequests({ clock, ...observe }));
  app.use("*", async function drainGate(c, next) {
    if (lifecycle.draining && c.req.path !== "/healthz") {
      throw new HttpError(503, "SERVICE_UNAVAILABLE", "the gateway is shutting down", {
        headers: { "retry-after": "5" },
      });
    }
    await next();
  });

  const metrics = observe?.metrics;
  if (metrics !== undefined) {
    app.get("/metrics", (c) =>
      c.body(metrics.registry.render(), 200, {
        "content-type": "text/plain; version=0.0.4; charset=utf-8",
      }));
  }

  app.openapi(healthRoute, (c) => c.json({ status: "ok" as const }, 200));
  app.openapi(readyRoute, (c) => {
    const snapshot = config.current;
    const last = config.lastReload;
    const details = {
      configVersion: snapshot.version,
      loadedAt: snapshot.loadedAt.toISOString(),
      lastReload: {
        ok: last.ok,
        at: last.at.toISOString(),
        source: last.source,
        errors: last.errors,
      },
    };
    return c.json({ status: "ready" as const, details }, 200);
  });

  if (admin !== undefined) app.route("/admin", adminRoutes({ ...admin, config, limiter, clock }));
  if (dashboard !== undefined) app.route("/dashboard", dashboardRoutes(dashboard));

  app.use(
    "/v1/*",
    apiKeyAuth({ config, limiter: authLimiter, failuresPerWindow: authFailuresPerMinute }),
  );
  app.use("/v1/*", rateLimit({ limiter, shadow }));
  app.use("/v1/*", async function bodySize(c, next) {
    const length = Number(c.req.header("content-length") ?? "0");
    if (!Number.isFinite(length) || length > maxBodyBytes) throw payloadTooLarge(maxBodyBytes);
    await next();
  });
  app.use("/v1/monitor/*", concurrencyLimit({ limiter, shadow }));
  app.use(
    "/v1/async/*",
    bodyLimit({
      maxSize: maxBodyBytes,
      onError: () => {
        throw payloadTooLarge(maxBodyBytes);
      },
    }),
  );
  if (tasks !== undefined) {
    app.route(
      "/v1/async",
      asyncRoutes({ tasks: tasks.service, limiter, taskTypes: tasks.taskTypes }),
    );
  }

  app.openapi(limitsRoute, (c) => {
    const account = c.get("account");
    const rate = c.get("rate");
    const plan = account.plan;
    return c.json({
      success: true as const,
      account: { id: account.id, plan: plan.name },
      plan: {
        name: plan.name,
        concurrency: plan.concurrency,
        rateLimit: { ...plan.rateLimit },
        queueLimit: plan.queueLimit,
        shadow: plan.shadow,
      },
      rate: {
        limit: rate.limit,
        remaining: rate.remaining,
        used: limiter.used(rate.bucketKey, c.get("nowMs")),
        windowMs: rate.windowMs,
      },
      concurrency: { used: limiter.slotsInUse(account.id), max: plan.concurrency },
      queue: {
        queued: tasks?.service.status(account).queuedTasks ?? queueDepth?.(account.id) ?? 0,
        limit: plan.queueLimit,
      },
    }, 200);
  });

  async function forward(c: Context<GatewayEnv, string>): Promise<Response> {
    const account = c.get("account");
    return await forwarder.forward(c.req.raw, {
      accountId: account.id,
      planName: account.plan.name,
      requestId: c.get("requestId"),
      clientAddress: c.env?.remoteAddr?.hostname,
      signal: c.req.raw.signal,
    });
  }

  app.openapi(monitorRoute, (c) => forward(c));
  app.all("/v1/monitor/:provider", (c) => forward(c));
  app.all("/v1/*", (c) => {
    if (!forwarder.servesAnyPath) {
      throw new HttpError(404, "RESOURCE_NOT_FOUND", `no route for ${c.req.method} ${c.req.path}`);
    }
    return forward(c);
  });

  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", {
    type: "http",
    scheme: "bearer",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "adminToken", {
    type: "http",
    scheme: "bearer",
  });
  app.doc("/openapi.json", {
    openapi: "3.0.3",
    info: { title: "sluice", version: "0.1.0", description: "Rate and concurrency gateway" },
  });
  return app;
}
