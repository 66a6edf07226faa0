/**
 * @module
 * What an async task is: the request a client submits (a zod schema, parsed
 * once at the edge), the record the gateway keeps, and the two views clients
 * see (summary on submit, full on `GET /v1/async/task/:id` and in webhooks).
 */

import { z } from "@hono/zod-openapi";

/** Task types and the monitor path each runs against (SPEC §5 defaults). */
export const DEFAULT_TASK_TYPES: Readonly<Record<string, string>> = Object.freeze({
  CHATGPT: "/v1/monitor/chatgpt",
  PERPLEXITY: "/v1/monitor/perplexity",
  GEMINI: "/v1/monitor/gemini",
  COPILOT: "/v1/monitor/copilot",
  AIMODE: "/v1/monitor/aimode",
  AIOVERVIEW: "/v1/monitor/aioverview",
  GOOGLE: "/v1/monitor/google",
  GOOGLE_NEWS: "/v1/monitor/google_news",
  GROK: "/v1/monitor/grok",
});

/** Lifecycle states: QUEUED → PROCESSING → COMPLETED | FAILED. */
export type TaskStatus = "QUEUED" | "PROCESSING" | "COMPLETED" | "FAILED";

/** Where and how the task's webhook went. */
export interface WebhookState {
  url: string;
  delivered: boolean;
  deliveredAt: string | null;
  attempts: number;
  lastError?: string;
  nextAttemptAt?: string;
  failed?: boolean;
}

/** A task as the gateway keeps (and journals) it. */
export interface Task {
  id: string;
  accountId: string;
  taskType: string;
  payload: Record<string, unknown>;
  priority: number;
  idempotencyKey: string | null;
  status: TaskStatus;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  latencyMs: number | null;
  attempts: number;
  result: unknown;
  error: { code: string; message: string } | null;
  webhook: WebhookState | null;
  /** Submission order, for FIFO within a priority (also across restarts). */
  seq: number;
}

/** The body of `POST /v1/async/task` (and each item of a batch). */
// deno-lint-ignore explicit-module-boundary-types -- the zod type is the contract; spelling it out would duplicate it
export function taskInputSchema(taskTypes: readonly string[]) {
  const [first, ...rest] = taskTypes;
  return z.strictObject({
    taskType: z.enum([first ?? "CHATGPT", ...rest]),
    payload: z.record(z.string(), z.unknown()),
    priority: z.int().min(1).max(10).default(1),
    idempotencyKey: z.string().min(1).max(256).optional(),
    webhook: z.strictObject({ url: z.url({ protocol: /^https?$/ }) }).optional(),
  }).openapi("TaskInput");
}

/** A parsed task submission. */
export type TaskInput = z.output<ReturnType<typeof taskInputSchema>>;

/** The summary fields of SPEC §5. */
export type TaskSummary = Pick<
  Task,
  "id" | "taskType" | "status" | "priority" | "createdAt" | "latencyMs" | "idempotencyKey"
>;

/** The full client view of a task. */
export interface TaskView extends TaskSummary {
  startedAt: string | null;
  finishedAt: string | null;
  attempts: number;
  result?: unknown;
  error?: { code: string; message: string };
  webhook: Pick<WebhookState, "url" | "delivered" | "deliveredAt" | "attempts"> | null;
}

/** The summary returned on submit (SPEC §5 summary fields). */
export function taskSummary(task: Task): TaskSummary {
  return {
    id: task.id,
    taskType: task.taskType,
    status: task.status,
    priority: task.priority,
    createdAt: task.createdAt,
    latencyMs: task.latencyMs,
    idempotencyKey: task.idempotencyKey,
  };
}

/** The full representation: summary, timing, outcome and webhook state. */
export function taskView(task: Task): TaskView {
  return {
    ...taskSummary(task),
    startedAt: task.startedAt,
    finishedAt: task.finishedAt,
    attempts: task.attempts,
    ...(task.status === "COMPLETED" ? { result: task.result } : {}),
    ...(task.error === null ? {} : { error: task.error }),
    webhook: task.webhook === null ? null : {
      url: task.webhook.url,
      delivered: task.webhook.delivered,
      deliveredAt: task.webhook.deliveredAt,
      attempts: task.webhook.attempts,
    },
  };
}
