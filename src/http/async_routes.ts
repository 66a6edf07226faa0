/**
 * @module
 * The async task routes (SPEC §4–5), mounted under `/v1/async` behind the
 * same auth and rate limit as every `/v1/*` call. Thin handlers: parse with
 * zod, call one {@linkcode TaskService} operation, map refusals to the
 * envelope (409 duplicate, 429 queue full, 400 invalid).
 */

import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Limiter } from "../limits/limiter.ts";
import { taskInputSchema, taskSummary, taskView } from "../tasks/task.ts";
import type { BatchItem, Refusal, TaskService } from "../tasks/task_service.ts";
import type { GatewayEnv } from "./context.ts";
import { errorBody, HttpError } from "./errors.ts";
import { validationHook } from "./validation.ts";

/** Options for {@linkcode asyncRoutes}. */
export interface AsyncRoutesOptions {
  tasks: TaskService;
  limiter: Limiter;
  taskTypes: readonly string[];
}

type InvalidRefusal = { reason: "invalid"; fields: { path: string; message: string }[] };

/** The refusal as the error it is answered with. */
export function refusalError(refusal: Refusal | InvalidRefusal): HttpError {
  switch (refusal.reason) {
    case "duplicate":
      return new HttpError(
        409,
        "RESOURCE_ALREADY_EXISTS",
        "a task with this idempotencyKey exists",
        {
          details: { taskId: refusal.existingId, idempotencyKey: refusal.idempotencyKey },
        },
      );
    case "queue_full":
      return new HttpError(429, "QUEUE_LIMIT_EXCEEDED", "the task queue of this account is full", {
        details: { limit: refusal.limit, queued: refusal.queued },
      });
    case "webhook":
      return new HttpError(400, "VALIDATION_ERROR", "webhook URL refused", {
        details: { fields: [{ path: "webhook.url", message: refusal.message }] },
      });
    case "invalid":
      return new HttpError(400, "VALIDATION_ERROR", "task validation failed", {
        details: { fields: refusal.fields },
      });
  }
}

const json = <T>(schema: T) => ({ "application/json": { schema } });
const security = [{ bearer: [] }];
const Envelope = z.object({ success: z.boolean() }).passthrough();

/** The `/v1/async/*` routes, to be mounted at `/v1/async`. */
export function asyncRoutes(options: AsyncRoutesOptions): OpenAPIHono<GatewayEnv> {
  const { tasks, limiter, taskTypes } = options;
  const TaskInput = taskInputSchema(taskTypes);
  const app = new OpenAPIHono<GatewayEnv>({ defaultHook: validationHook });

  app.openapi(
    createRoute({
      method: "post",
      path: "/task",
      security,
      request: { body: { content: json(TaskInput), required: true } },
      responses: {
        200: { description: "queued", content: json(Envelope) },
        409: { description: "duplicate idempotencyKey", content: json(Envelope) },
        429: { description: "queue full", content: json(Envelope) },
      },
    }),
    async (c) => {
      const result = await tasks.submit(c.get("account"), c.req.valid("json"));
      if (!result.ok) throw refusalError(result);
      return c.json({ success: true as const, task: taskSummary(result.task) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "post",
      path: "/task/batch",
      security,
      description: "1-500 tasks; each validated alone, results in input order. A batch whose " +
        "valid tasks would overflow the queue is rejected whole with 429.",
      request: {
        body: { content: json(z.array(z.unknown()).min(1).max(500)), required: true },
      },
      responses: {
        200: { description: "per-item results", content: json(Envelope) },
        429: { description: "queue full", content: json(Envelope) },
      },
    }),
    async (c) => {
      const items: BatchItem[] = c.req.valid("json").map((raw, index) => {
        const parsed = TaskInput.safeParse(raw);
        if (parsed.success) return { ok: true, input: parsed.data };
        return {
          ok: false,
          fields: parsed.error.issues.map((issue) => ({
            path: [index, ...issue.path].map(String).join("."),
            message: issue.message,
          })),
        };
      });
      const outcome = await tasks.submitBatch(c.get("account"), items);
      if (!outcome.ok) throw refusalError(outcome);
      const now = new Date(c.get("nowMs"));
      const results = outcome.results.map((item) =>
        item.ok
          ? { index: item.index, success: true, task: taskSummary(item.task) }
          : { index: item.index, ...errorBody(refusalError(item.refusal), now) }
      );
      const accepted = results.filter((r) => r.success).length;
      return c.json({
        success: true as const,
        accepted,
        rejected: results.length - accepted,
        results,
      }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/task/{id}",
      security,
      request: { params: z.object({ id: z.uuid() }) },
      responses: {
        200: { description: "the task", content: json(Envelope) },
        404: { description: "no such task", content: json(Envelope) },
      },
    }),
    (c) => {
      const { id } = c.req.valid("param");
      const task = tasks.get(c.get("account"), id);
      if (task === undefined) throw new HttpError(404, "RESOURCE_NOT_FOUND", `no task ${id}`);
      return c.json({ success: true as const, task: taskView(task) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "get",
      path: "/status",
      security,
      responses: { 200: { description: "queue and slot use", content: json(Envelope) } },
    }),
    (c) => {
      const account = c.get("account");
      return c.json({
        success: true as const,
        ...tasks.status(account),
        concurrency: { used: limiter.slotsInUse(account.id), max: account.plan.concurrency },
      }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "delete",
      path: "/queue",
      security,
      responses: { 200: { description: "queued tasks deleted", content: json(Envelope) } },
    }),
    async (c) => {
      const cleared = await tasks.clearQueue(c.get("account"));
      return c.json({ success: true as const, cleared }, 200);
    },
  );

  return app;
}
