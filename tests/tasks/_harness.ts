/**
 * A gateway with the async task API, composed the way `main.ts` composes it
 * (ConfigStore, Limiter, Simulator, TaskStore, TaskJournal on a temp dir,
 * Dispatcher, TaskService, optional WebhookSender, createApp), but with a
 * fake clock and a simulator whose latency the test controls through a
 * {@linkcode Gate}. Tests wait on events (a task started or finished, a
 * simulator call, a webhook update) through {@linkcode Events}, never on timers.
 */

import { z } from "zod";
import { createApp } from "../../src/http/app.ts";
import { Limiter } from "../../src/limits/limiter.ts";
import type { PlansFile } from "../../src/plans/schema.ts";
import { buildSnapshot, ConfigStore } from "../../src/plans/snapshot.ts";
import { Dispatcher } from "../../src/tasks/dispatcher.ts";
import { checkWebhookUrlSyntax } from "../../src/tasks/ssrf_guard.ts";
import { DEFAULT_TASK_TYPES, type Task, type WebhookState } from "../../src/tasks/task.ts";
import { TaskJournal } from "../../src/tasks/task_journal.ts";
import { TaskService } from "../../src/tasks/task_service.ts";
import { TaskStore } from "../../src/tasks/task_store.ts";
import { WebhookSender } from "../../src/tasks/webhook_sender.ts";
import type { Forwarder } from "../../src/upstream/forwarder.ts";
import { Simulator } from "../../src/upstream/simulator.ts";
import { FakeClock, plansDocument, testKey } from "../_helpers.ts";

/** Resolves `waitFor` calls when something they watch may have changed. */
export class Events {
  #waiters: { until: () => boolean; resolve: () => void }[] = [];

  /** Something happened: re-check every waiter. */
  notify(): void {
    const ready = this.#waiters.filter((waiter) => waiter.until());
    if (ready.length === 0) return;
    this.#waiters = this.#waiters.filter((waiter) => !ready.includes(waiter));
    for (const waiter of ready) waiter.resolve();
  }

  /**
   * Resolves once `until()` holds after some event. The timer is a watchdog
   * that turns a hang into a failure naming `what`; it never paces the test.
   */
  waitFor(until: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
    if (until()) return Promise.resolve();
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const timer = setTimeout(() => {
      this.#waiters = this.#waiters.filter((waiter) => waiter !== entry);
      reject(new Error(`timed out waiting for ${what}`));
    }, timeoutMs);
    const entry = {
      until,
      resolve: () => {
        clearTimeout(timer);
        resolve();
      },
    };
    this.#waiters.push(entry);
    return promise;
  }
}

/**
 * The simulator's `sleep`: while closed, every call waits until the test
 * releases it (or its signal aborts); while open, calls return at once.
 */
export class Gate {
  /** Simulator calls so far. */
  calls = 0;
  #open: boolean;
  #waiting: { resolve: () => void }[] = [];
  #events: Events;

  constructor(events: Events, open = false) {
    this.#events = events;
    this.#open = open;
  }

  /** Calls waiting for a release. */
  get waitingCount(): number {
    return this.#waiting.length;
  }

  /** The `sleep` to give the Simulator. */
  sleep = (_ms: number, signal: AbortSignal): Promise<void> => {
    this.calls++;
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    if (signal.aborted) {
      reject(signal.reason);
    } else if (this.#open) {
      resolve();
    } else {
      const entry = {
        resolve: () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        this.#waiting = this.#waiting.filter((e) => e !== entry);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiting.push(entry);
    }
    this.#events.notify();
    return promise;
  };

  /** Lets the `count` oldest waiting calls finish. */
  release(count = 1): void {
    for (const entry of this.#waiting.splice(0, count)) entry.resolve();
  }

  /** Lets every waiting call, and every later one, finish at once. */
  open(): void {
    this.#open = true;
    this.release(this.#waiting.length);
  }

  /** Makes later calls wait again. */
  close(): void {
    this.#open = false;
  }
}

/** A TaskStore that reports starts and finishes, and keeps the finish order. */
export class ObservedStore extends TaskStore {
  readonly finishedIds: string[] = [];
  #events: Events;
  #unfinished = 0;

  constructor(events: Events) {
    super();
    this.#events = events;
  }

  /** Tasks QUEUED or PROCESSING. */
  get unfinishedCount(): number {
    return this.#unfinished;
  }

  override add(task: Task): void {
    if (task.status === "QUEUED" || task.status === "PROCESSING") this.#unfinished++;
    super.add(task);
  }

  override clearQueued(accountId: string): Task[] {
    const cleared = super.clearQueued(accountId);
    this.#unfinished -= cleared.length;
    return cleared;
  }

  override start(accountId: string, now: Date): Task | undefined {
    const task = super.start(accountId, now);
    if (task !== undefined) this.#events.notify();
    return task;
  }

  override finish(
    task: Task,
    outcome: Pick<Task, "status" | "result" | "error">,
    now: Date,
  ): void {
    super.finish(task, outcome, now);
    this.#unfinished--;
    this.finishedIds.push(task.id);
    this.#events.notify();
  }

  /** Tasks of `accountId` in `status`. */
  count(status: Task["status"], accountId?: string): number {
    let n = 0;
    for (const task of this.all()) {
      if (task.status === status && (accountId === undefined || task.accountId === accountId)) n++;
    }
    return n;
  }
}

/** Options for {@linkcode startHarness}. */
export interface HarnessOptions {
  plans: PlansFile["plans"];
  /** Account id → plan name; each gets the key `testKey(id)`. */
  accounts: Record<string, string>;
  /** Account id → `whsec_…` secret. */
  webhookSecrets?: Record<string, string>;
  /** The upstream; default a Simulator whose sleep is the harness's gate. */
  forwarder?: (simulator: Simulator) => Forwarder;
  /** Replaces the gate as the simulator's sleep (the drain test's tiny latency). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Whether the gate starts open; default false (simulator calls block). */
  gateOpen?: boolean;
  /** Dispatcher retry waits; default [5, 10, 20, 40]. */
  retryDelaysMs?: readonly number[];
  /** Build a WebhookSender with these retry waits (no jitter). */
  webhookRetryDelaysMs?: readonly number[];
  /** `--allow-private-webhooks`; default false. */
  allowPrivateWebhooks?: boolean;
}

/** The composed gateway and its parts. */
export interface Harness {
  events: Events;
  gate: Gate;
  clock: FakeClock;
  config: ConfigStore;
  limiter: Limiter;
  store: ObservedStore;
  journal: TaskJournal;
  dispatcher: Dispatcher;
  service: TaskService;
  sender: WebhookSender | undefined;
  app: ReturnType<typeof createApp>;
  dataDir: string;
  /** Calls the app as `accountId`; the body is always read. */
  call(accountId: string, method: string, path: string, body?: unknown): Promise<Reply>;
  /** Resolves when every task known is COMPLETED or FAILED and nothing runs. */
  settled(timeoutMs?: number): Promise<void>;
  /** Stops everything and removes the temp dir. */
  close(): Promise<void>;
}

/** One answer of the app. */
export interface Reply {
  status: number;
  headers: Headers;
  body: unknown;
}

/** Builds the gateway as `main.ts` does, around a fake clock near wall time. */
export async function startHarness(options: HarnessOptions): Promise<Harness> {
  const {
    plans,
    accounts,
    webhookSecrets = {},
    retryDelaysMs = [5, 10, 20, 40],
    allowPrivateWebhooks = false,
  } = options;
  const events = new Events();
  // Near wall time, because standardwebhooks rejects timestamps > 5 min off.
  const clock = new FakeClock(Date.now());
  const document = plansDocument(plans, accounts);
  for (const [id, secret] of Object.entries(webhookSecrets)) {
    const account = document.accounts?.[id];
    if (account !== undefined) account.webhookSecret = secret;
  }
  const built = buildSnapshot(document, new Date(clock.nowMs()));
  if (!built.ok) throw new Error(`bad test config: ${JSON.stringify(built.errors)}`);
  const config = new ConfigStore(built.snapshot);
  const limiter = new Limiter({ epochMs: clock.nowMs() });
  const gate = new Gate(events, options.gateOpen ?? false);
  const simulator = new Simulator({
    latencyMs: { min: 1, max: 1 },
    random: () => 0,
    sleep: options.sleep ?? gate.sleep,
  });
  const forwarder = options.forwarder?.(simulator) ?? simulator;
  const store = new ObservedStore(events);
  const dispatchErrors: unknown[] = [];
  const dataDir = await Deno.makeTempDir({ prefix: "sluice_tasks_" });
  const { journal } = await TaskJournal.open(dataDir, { liveTasks: () => store.all() });
  const sender = options.webhookRetryDelaysMs === undefined ? undefined : new WebhookSender({
    clock,
    retryDelaysMs: options.webhookRetryDelaysMs,
    jitter: 0,
    allowPrivate: allowPrivateWebhooks,
    onUpdate: (taskId: string, state: WebhookState) => {
      const task = store.get(taskId);
      if (task !== undefined) {
        task.webhook = state;
        journal.put(task).catch(() => {});
      }
      events.notify();
    },
  });
  const dispatcher = new Dispatcher({
    webhooks: sender,
    store,
    journal,
    limiter,
    config,
    forwarder,
    clock,
    taskPaths: DEFAULT_TASK_TYPES,
    retryDelaysMs,
    onError: (error) => dispatchErrors.push(error),
  });
  const service = new TaskService({
    store,
    journal,
    dispatcher,
    clock,
    checkWebhookUrl: (url) => checkWebhookUrlSyntax(url, { allowPrivate: allowPrivateWebhooks }),
  });
  const app = createApp({
    config,
    limiter,
    clock,
    forwarder,
    tasks: { service, taskTypes: Object.keys(DEFAULT_TASK_TYPES) },
  });

  async function call(
    accountId: string,
    method: string,
    path: string,
    body?: unknown,
  ): Promise<Reply> {
    const headers: Record<string, string> = { authorization: `Bearer ${testKey(accountId)}` };
    let text: string | undefined;
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      text = typeof body === "string" ? body : JSON.stringify(body);
    }
    const response = await app.request(path, { method, headers, body: text ?? null });
    const raw = await response.text();
    return { status: response.status, headers: response.headers, body: parseJson(raw) };
  }

  return {
    events,
    gate,
    clock,
    config,
    limiter,
    store,
    journal,
    dispatcher,
    service,
    sender,
    app,
    dataDir,
    call,
    async settled(timeoutMs?: number) {
      await events.waitFor(() => store.unfinishedCount === 0, "every task to finish", timeoutMs);
      await dispatcher.idle();
    },
    async close() {
      gate.open();
      await dispatcher.stop();
      await sender?.stop();
      await journal.close();
      await Deno.remove(dataDir, { recursive: true });
      if (dispatchErrors.length > 0) {
        throw new AggregateError(dispatchErrors, "the dispatcher reported errors");
      }
    },
  };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The summary fields of SPEC §5, exactly. */
export const TaskSummarySchema = z.strictObject({
  id: z.uuid(),
  taskType: z.string(),
  status: z.enum(["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]),
  priority: z.int().min(1).max(10),
  createdAt: z.iso.datetime(),
  latencyMs: z.number().nullable(),
  idempotencyKey: z.string().nullable(),
});

/** The full task view of `GET /v1/async/task/:id` and of webhooks. */
export const TaskViewSchema = TaskSummarySchema.extend({
  startedAt: z.iso.datetime().nullable(),
  finishedAt: z.iso.datetime().nullable(),
  attempts: z.int().min(0),
  result: z.unknown().optional(),
  error: z.strictObject({ code: z.string(), message: z.string() }).optional(),
  webhook: z.strictObject({
    url: z.string(),
    delivered: z.boolean(),
    deliveredAt: z.iso.datetime().nullable(),
    attempts: z.int().min(0),
  }).nullable(),
});

/** The one error envelope. */
export const ErrorEnvelopeSchema = z.strictObject({
  success: z.literal(false),
  error: z.strictObject({
    code: z.string(),
    message: z.string(),
    details: z.record(z.string(), z.unknown()).optional(),
    timestamp: z.iso.datetime(),
  }),
});

/** `{success: true, task: <summary>}`. */
export const SubmitReplySchema = z.strictObject({
  success: z.literal(true),
  task: TaskSummarySchema,
});

/** `{success: true, task: <view>}`. */
export const GetReplySchema = z.strictObject({ success: z.literal(true), task: TaskViewSchema });

/** The error of `reply`, checked against the envelope. */
export function errorOf(reply: Reply): z.output<typeof ErrorEnvelopeSchema>["error"] {
  return ErrorEnvelopeSchema.parse(reply.body).error;
}

/** A well-formed task submission. */
export function taskInput(
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return { taskType: "CHATGPT", payload: { prompt: "best running shoes" }, ...extra };
}
