/**
 * @module
 * sluice's composition root and CLI. The only place that reads the
 * environment, builds the real clock, calls `Deno.serve` and owns signals:
 *
 *   sluice serve [flags]                       run the gateway
 *   sluice plans check FILE                    validate a plans file (exit 1 if bad)
 *   sluice keys create --account ID [--plans FILE]
 *   sluice keys revoke --account ID --key-id KEY [--plans FILE]
 */

import { parseServeFlags, serveHelp, type ServeOptions } from "./src/config/flags.ts";
import { createApp, type Lifecycle } from "./src/http/app.ts";
import type { Clock } from "./src/limits/clock.ts";
import { Limiter } from "./src/limits/limiter.ts";
import { keysCommand, plansCheckCommand } from "./src/plans/plans_cli.ts";
import { ensurePlansFile, parsePlansText } from "./src/plans/plans_file.ts";
import { ConfigStore } from "./src/plans/snapshot.ts";
import { PlansWatcher } from "./src/plans/plans_watcher.ts";
import { PlansWriter } from "./src/plans/plans_writer.ts";
import { generateApiKey } from "./src/plans/api_key.ts";
import { chooseForwarder } from "./src/upstream/choose_forwarder.ts";
import { DEFAULT_PROVIDERS } from "./src/upstream/simulator.ts";
import { WorkerPool } from "./src/workers/worker_pool.ts";
import { CLIENT_ADDRESS_HEADER, createWorkerPlane } from "./src/workers/data_plane.ts";
import type { FromWorker, ToWorker } from "./src/workers/protocol.ts";
import { type RequestSink, requestSink } from "./src/http/observe.ts";
import { Dispatcher } from "./src/tasks/dispatcher.ts";
import { DEFAULT_TASK_TYPES } from "./src/tasks/task.ts";
import { TaskJournal } from "./src/tasks/task_journal.ts";
import { TaskService } from "./src/tasks/task_service.ts";
import { TaskStore } from "./src/tasks/task_store.ts";
import { RequestLog } from "./src/observe/request_log.ts";
import { TrafficStats } from "./src/observe/traffic_stats.ts";
import { createGatewayMetrics } from "./src/observe/gateway_metrics.ts";
import { DashboardFeed } from "./src/observe/dashboard_feed.ts";
import { resumeWebhooks } from "./src/tasks/resume.ts";
import { WebhookSender } from "./src/tasks/webhook_sender.ts";
import { checkWebhookUrlSyntax } from "./src/tasks/ssrf_guard.ts";

const USAGE = `sluice — rate and concurrency gateway

Usage:
  sluice serve [flags]                          run the gateway (sluice serve --help)
  sluice plans check FILE                       validate a plans file
  sluice keys create --account ID [--plans FILE]
  sluice keys revoke --account ID --key-id KEY [--plans FILE]`;

const realClock: Clock = { nowMs: () => Date.now() };

function envRecord(): Record<string, string | undefined> {
  return Deno.env.toObject();
}

async function serve(options: ServeOptions): Promise<void> {
  const startedAt = new Date(realClock.nowMs());
  const ensured = await ensurePlansFile(options.plans, startedAt);
  const plansText = await Deno.readTextFile(options.plans);
  const loaded = parsePlansText(plansText, startedAt);
  if (!loaded.ok) {
    console.error(`sluice: ${options.plans} is not a valid plans file:`);
    for (const e of loaded.errors) console.error(`  ${e.path}: ${e.message}`);
    Deno.exit(1);
  }
  const config = new ConfigStore(loaded.snapshot);
  const watcher = new PlansWatcher(options.plans, {
    config,
    clock: realClock,
    onReload: (outcome, source) => {
      if (outcome.result === "applied") {
        console.log(`sluice: plans reloaded from ${source} (version ${outcome.version})`);
      } else if (outcome.result === "invalid") {
        console.error(`sluice: plans file rejected, last good config stays live:`);
        for (const e of outcome.errors) console.error(`  ${e.path}: ${e.message}`);
      }
    },
  });
  watcher.markLive(plansText);
  await watcher.start();
  const writer = new PlansWriter(options.plans, { config, clock: realClock, watcher });
  const adminToken = options.adminToken ?? generateApiKey().replace(/^sk_/, "adm_");
  const limiter = new Limiter({
    windowCapacity: options.windowCapacity,
    leaseMs: options.upstreamTimeoutMs + options.leaseMarginMs,
    epochMs: startedAt.getTime(),
  });
  const forwarder = chooseForwarder(options);
  const store = new TaskStore();
  const { journal, tasks: restored } = await TaskJournal.open(options.dataDir, {
    liveTasks: () => store.all(),
  });
  for (const task of restored) store.add(task);
  const webhooks = new WebhookSender({
    clock: realClock,
    allowPrivate: options.allowPrivateWebhooks,
    onUpdate: (taskId, state) => {
      metrics.webhookDeliveries.inc({
        outcome: state.delivered ? "delivered" : state.failed === true ? "failed" : "retrying",
      });
      const task = store.get(taskId);
      if (task === undefined) return;
      task.webhook = state;
      journal.put(task).catch((e) => console.error("sluice: journal write failed", e));
    },
  });
  const dispatcher = new Dispatcher({
    webhooks,
    store,
    journal,
    limiter,
    config,
    forwarder,
    clock: realClock,
    taskPaths: DEFAULT_TASK_TYPES,
    attemptTimeoutMs: options.upstreamTimeoutMs,
    onError: (error) => console.error("sluice: task dispatch error", error),
  });
  const taskService = new TaskService({
    store,
    journal,
    dispatcher,
    clock: realClock,
    checkWebhookUrl: (url) =>
      checkWebhookUrlSyntax(url, { allowPrivate: options.allowPrivateWebhooks }),
  });
  resumeWebhooks(store.all(), webhooks, config.current);
  const requestLog = new RequestLog({ dir: `${options.dataDir}/logs` });
  const stats = new TrafficStats();
  let pool: WorkerPool | undefined;
  const metrics = createGatewayMetrics({
    limiter,
    config,
    queueDepth: (id) => store.queuedCount(id),
    reloads: () => watcher.counts,
    log: requestLog,
    extraReclaimed: () => pool?.reclaimed ?? 0,
  });
  const recordRequest = requestSink({ log: requestLog, metrics, stats });
  const sink: RequestSink = (record, flags) => {
    metrics.isolateRequests.inc({ isolate: "0" });
    recordRequest(record, flags);
  };
  const feed = new DashboardFeed({
    config,
    limiter,
    stats,
    clock: realClock,
    queueDepth: (id) => store.queuedCount(id),
    log: requestLog,
  });
  const lifecycle: { draining: boolean } & Lifecycle = { draining: false };
  const app = createApp({
    config,
    limiter,
    clock: realClock,
    forwarder,
    lifecycle,
    maxBodyBytes: options.maxBodyBytes,
    shadow: options.shadow,
    authFailuresPerMinute: options.authFailuresPerMinute,
    observe: { metrics, sink },
    tasks: { service: taskService, taskTypes: Object.keys(DEFAULT_TASK_TYPES) },
    admin: { token: adminToken, writer, watcher, startedAtMs: startedAt.getTime() },
    dashboard: { feed, token: adminToken },
    onUnexpectedError: (error, requestId) =>
      console.error(`[${requestId}] unexpected error`, error),
  });

  const housekeeping = setInterval(() => {
    const nowMs = realClock.nowMs();
    const reclaimed = limiter.leases.reclaimOverdue(nowMs);
    if (reclaimed > 0) console.error(`sluice: reclaimed ${reclaimed} overdue slot lease(s)`);
    limiter.reclaimIdle(nowMs, new Set(config.current.accounts.keys()), pool?.assignedKeys);
    taskService.expire(options.taskTtlMs).catch((e) => console.error("sluice: task expiry", e));
    stats.prune(nowMs);
  }, 1000);
  const logWriter = setInterval(() => {
    pool?.publishQueueDepths((id) => store.queuedCount(id));
    requestLog.drain().catch((e) => console.error("sluice: request log write failed", e));
  }, 250);

  const multi = options.workers > 1;
  const server = Deno.serve({
    port: options.port,
    hostname: options.hostname,
    reusePort: multi,
    onListen: ({ hostname, port }) => {
      const base = `http://${hostname === "0.0.0.0" ? "127.0.0.1" : hostname}:${port}`;
      console.log(
        `sluice listening on ${base} (plans: ${options.plans}, upstream: ${
          options.upstream ?? "built-in simulator"
        })`,
      );
      if (options.adminToken === undefined) {
        console.log(
          `Admin token (generated for this run; set --admin-token or SLUICE_ADMIN_TOKEN to fix one):`,
        );
        console.log(`  ${adminToken}`);
        console.log(`  curl ${base}/admin/status -H "Authorization: Bearer ${adminToken}"`);
      }
      if (restored.length > 0) {
        console.log(`Restored ${restored.length} task(s) from ${journal.path}.`);
      }
      if (ensured.created) {
        console.log(`\nCreated ${options.plans} with the standard plans and a demo account.`);
        console.log(`Demo API key (shown once, only its hash is stored):\n  ${ensured.apiKey}\n`);
        console.log("Try it:");
        console.log(
          `  curl -i -X POST ${base}/v1/monitor/chatgpt -H "Authorization: Bearer ${ensured.apiKey}" ` +
            `-H "Content-Type: application/json" -d '{"prompt":"best running shoes"}'\n`,
        );
      }
    },
  }, app.fetch);

  let control: Deno.HttpServer<Deno.NetAddr> | undefined;
  if (multi) {
    // Workers pass control-plane requests here; it is the same app, on loopback only.
    control = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (request, info) => {
        const client = request.headers.get(CLIENT_ADDRESS_HEADER);
        const remoteAddr: Deno.NetAddr = client === null
          ? info.remoteAddr
          : { transport: "tcp", hostname: client, port: 0 };
        return app.fetch(request, { remoteAddr });
      },
    );
    pool = new WorkerPool({
      count: options.workers - 1,
      moduleUrl: import.meta.url,
      settings: {
        port: server.addr.port,
        hostname: options.hostname,
        controlUrl: `http://127.0.0.1:${control.addr.port}`,
        upstream: options.upstream,
        upstreamClient: options.upstreamClient,
        upstreamTimeoutMs: options.upstreamTimeoutMs,
        simLatencyMs: options.simLatencyMs,
        simErrorRate: options.simErrorRate,
        maxBodyBytes: options.maxBodyBytes,
        shadow: options.shadow,
        authFailuresPerMinute: options.authFailuresPerMinute,
        leaseMs: options.upstreamTimeoutMs + options.leaseMarginMs,
        epochMs: limiter.epochMs,
      },
      limiter,
      config,
      clock: realClock,
      providers: new Set(DEFAULT_PROVIDERS),
      onRecords: (batch, dropped, index) => {
        metrics.isolateRequests.inc({ isolate: String(index + 1) }, batch.length);
        for (const [record, flags] of batch) recordRequest(record, flags);
        requestLog.countDropped(dropped);
      },
      onReleased: (accounts) => {
        for (const account of accounts) dispatcher.kick(account);
      },
      onError: (message) => console.error(`sluice: ${message}`),
    });
    await pool.start();
    console.log(`sluice: ${options.workers} data-plane isolates share port ${server.addr.port}`);
  }

  dispatcher.kickAll();
  let stopping = false;
  async function shutdown(signal: string): Promise<void> {
    if (stopping) return;
    stopping = true;
    lifecycle.draining = true;
    feed.close(); // open event streams would otherwise hold server.shutdown() to its deadline
    console.log(`sluice: ${signal}, draining (up to ${options.shutdownTimeoutMs} ms)`);
    const deadline = new Promise<void>((resolve) => setTimeout(resolve, options.shutdownTimeoutMs));
    await Promise.race([
      Promise.all([server.shutdown(), control?.shutdown(), pool?.drain(options.shutdownTimeoutMs)]),
      deadline,
    ]);
    clearInterval(housekeeping);
    clearInterval(logWriter);
    await requestLog.drain();
    await dispatcher.stop(1000);
    await webhooks.stop();
    await journal.close();
    await watcher.stop();
    Deno.exit(0);
  }
  let shuttingDown: Promise<void> | undefined;
  Deno.addSignalListener("SIGTERM", () => void (shuttingDown ??= shutdown("SIGTERM")));
  Deno.addSignalListener("SIGINT", () => void (shuttingDown ??= shutdown("SIGINT")));
  await server.finished;
  // The server finishes as soon as the HTTP drain ends; returning now would exit
  // before the dispatcher's grace, webhook stop and journal close have run.
  await shuttingDown;
}

function fail(message: string): number {
  console.error(`sluice: ${message}`);
  return 1;
}

async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  switch (command) {
    case "serve": {
      if (rest.includes("--help") || rest.includes("-h")) {
        console.log(serveHelp());
        return 0;
      }
      const parsed = parseServeFlags(rest, envRecord());
      if (!parsed.ok) {
        console.error(`sluice: ${parsed.error}\n\n${serveHelp()}`);
        return 2;
      }
      await serve(parsed.value);
      return 0;
    }
    case "plans":
      if (rest[0] === "check") return await plansCheckCommand(rest[1], realClock);
      console.error("usage: sluice plans check FILE");
      return 2;
    case "keys":
      try {
        return await keysCommand(rest, {
          clock: realClock,
          plansPath: Deno.env.get("SLUICE_PLANS") ?? "./plans.json",
        });
      } catch (error) {
        return fail(error instanceof Error ? error.message : String(error));
      }
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(USAGE);
      return command === undefined ? 2 : 0;
    default:
      console.error(`sluice: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

/** Runs this module as a data-plane worker isolate (see `src/workers/`). */
function runWorker(): void {
  // Deno's types describe the main isolate's global; this is a worker's, seen from inside.
  const scope = globalThis as unknown as {
    onmessage: ((event: MessageEvent<ToWorker>) => void) | null;
    postMessage(message: FromWorker): void;
  };
  const post = (message: FromWorker) => scope.postMessage(message);
  let plane: ReturnType<typeof createWorkerPlane> | undefined;
  let server: Deno.HttpServer<Deno.NetAddr> | undefined;
  let flusher: ReturnType<typeof setInterval> | undefined;
  let workerIndex = -1;
  scope.onmessage = async (event) => {
    const message = event.data;
    if (message.type === "init") {
      plane = createWorkerPlane(message, realClock, post);
      const { port, hostname } = message.settings;
      const index = message.index;
      workerIndex = index;
      server = Deno.serve({
        port,
        hostname,
        reusePort: true,
        onListen: () => post({ type: "listening", index }),
      }, plane.app.fetch);
      flusher = setInterval(() => plane?.flush(), 250);
      return;
    }
    plane?.receive(message);
    if (message.type === "drain") {
      await server?.shutdown();
      clearInterval(flusher);
      plane?.flush();
      post({ type: "drained", index: workerIndex });
    }
  };
}

if ("WorkerGlobalScope" in globalThis) {
  runWorker();
} else if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
