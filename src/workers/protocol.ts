/**
 * @module
 * Messages between the main isolate (control plane) and data-plane worker
 * isolates. Limits live in shared memory, so nothing here is on a request's
 * path: config goes out (and is acknowledged before an admin write returns),
 * log records and freed-slot notices come back in batches.
 */

import type { Assignment, SharedTables } from "../limits/limiter.ts";
import type { RequestRecord } from "../observe/request_log.ts";
import type { PlansFile } from "../plans/schema.ts";

/** What a worker needs to serve the data plane. */
export interface WorkerSettings {
  port: number;
  hostname: string;
  /** Base URL of the main isolate's private listener, for control-plane routes. */
  controlUrl: string;
  upstream: string | undefined;
  upstreamClient: "raw" | "node" | "fetch";
  upstreamTimeoutMs: number;
  simLatencyMs: { min: number; max: number };
  simErrorRate: number;
  maxBodyBytes: number;
  shadow: boolean;
  authFailuresPerMinute: number;
  leaseMs: number;
  epochMs: number;
}

/** Main → worker. */
export type ToWorker =
  | {
    type: "init";
    index: number;
    settings: WorkerSettings;
    tables: SharedTables;
    queueDepths: SharedArrayBuffer;
    config: ConfigMessage;
  }
  | ({ type: "config" } & ConfigMessage)
  | { type: "drain" };

/** A config version with the entry assignment that goes with it. */
export interface ConfigMessage {
  seq: number;
  document: PlansFile;
  assignment: Assignment;
}

/** Worker → main. */
export type FromWorker =
  | { type: "listening"; index: number }
  | { type: "ack"; index: number; seq: number }
  | { type: "records"; index: number; batch: [RequestRecord, number][]; dropped: number }
  | { type: "released"; accounts: string[] }
  | { type: "stats"; index: number; reclaimed: number; acquired: number; released: number }
  | { type: "drained"; index: number }
  | { type: "error"; index: number; message: string };
