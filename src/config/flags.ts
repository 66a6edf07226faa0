/**
 * @module
 * Command-line flags and their `SLUICE_*` environment twins, parsed once into
 * a typed options object. A flag beats its env twin, which beats the default.
 * Pure: `main.ts` passes in `Deno.args` and the environment.
 */

import { parseArgs } from "node:util";

/** Everything `sluice serve` can be told. */
export interface ServeOptions {
  port: number;
  hostname: string;
  plans: string;
  dataDir: string;
  upstream: string | undefined;
  upstreamClient: "raw" | "node" | "fetch";
  adminToken: string | undefined;
  simLatencyMs: { min: number; max: number };
  simErrorRate: number;
  workers: number;
  maxBodyBytes: number;
  upstreamTimeoutMs: number;
  leaseMarginMs: number;
  shutdownTimeoutMs: number;
  taskTtlMs: number;
  shadow: boolean;
  allowPrivateWebhooks: boolean;
  authFailuresPerMinute: number;
  windowCapacity: number;
}

interface FlagSpec {
  env: string;
  kind: "string" | "boolean";
  default?: string;
  help: string;
}

/** Every `serve` flag: its env twin, default and help line. */
export const SERVE_FLAGS: Record<string, FlagSpec> = {
  port: { env: "SLUICE_PORT", kind: "string", default: "8080", help: "TCP port" },
  hostname: {
    env: "SLUICE_HOSTNAME",
    kind: "string",
    default: "0.0.0.0",
    help: "address to listen on",
  },
  plans: {
    env: "SLUICE_PLANS",
    kind: "string",
    default: "./plans.json",
    help: "plans file (created with a demo account if missing)",
  },
  "data-dir": {
    env: "SLUICE_DATA_DIR",
    kind: "string",
    default: "./data",
    help: "directory for tasks and logs",
  },
  upstream: {
    env: "SLUICE_UPSTREAM",
    kind: "string",
    help: "upstream base URL (default: the built-in simulator)",
  },
  "upstream-client": {
    env: "SLUICE_UPSTREAM_CLIENT",
    kind: "string",
    default: "node",
    help: "HTTP client for the upstream: node (node:http), raw (own pooled HTTP/1.1) or fetch",
  },
  "admin-token": {
    env: "SLUICE_ADMIN_TOKEN",
    kind: "string",
    help: "admin API token (generated and printed if absent)",
  },
  "sim-latency": {
    env: "SLUICE_SIM_LATENCY",
    kind: "string",
    default: "200-1500",
    help: "simulator latency range MIN-MAX, ms",
  },
  "sim-error-rate": {
    env: "SLUICE_SIM_ERROR_RATE",
    kind: "string",
    default: "0",
    help: "share of simulated calls that fail, 0..1",
  },
  workers: { env: "SLUICE_WORKERS", kind: "string", default: "1", help: "data-plane isolates" },
  "max-body": {
    env: "SLUICE_MAX_BODY",
    kind: "string",
    default: "1MiB",
    help: "largest request body (bytes, or with KiB/MiB)",
  },
  "upstream-timeout": {
    env: "SLUICE_UPSTREAM_TIMEOUT",
    kind: "string",
    default: "300s",
    help: "bound on one upstream exchange (ms, s, m, h)",
  },
  "lease-margin": {
    env: "SLUICE_LEASE_MARGIN",
    kind: "string",
    default: "30s",
    help: "a slot held this long past the upstream timeout is reclaimed as a leak",
  },
  "shutdown-timeout": {
    env: "SLUICE_SHUTDOWN_TIMEOUT",
    kind: "string",
    default: "30s",
    help: "how long a graceful shutdown waits for in-flight requests",
  },
  "task-ttl": {
    env: "SLUICE_TASK_TTL",
    kind: "string",
    default: "24h",
    help: "how long finished async tasks are kept",
  },
  shadow: {
    env: "SLUICE_SHADOW",
    kind: "boolean",
    help: "decide and report limits but never reject",
  },
  "allow-private-webhooks": {
    env: "SLUICE_ALLOW_PRIVATE_WEBHOOKS",
    kind: "boolean",
    help: "allow webhooks to private and loopback addresses",
  },
  "auth-failures-per-minute": {
    env: "SLUICE_AUTH_FAILURES_PER_MINUTE",
    kind: "string",
    default: "30",
    help: "failed authentications allowed per client IP per minute",
  },
  "window-capacity": {
    env: "SLUICE_WINDOW_CAPACITY",
    kind: "string",
    default: "131072",
    help: "rate windows held in memory at most (576 bytes each)",
  },
};

/** The result of parsing flags: options, or a message for the user. */
export type FlagsResult<T> = { ok: true; value: T } | { ok: false; error: string };

/** Parses `serve` flags from `args`, falling back to `env`, then defaults. */
export function parseServeFlags(
  args: string[],
  env: Record<string, string | undefined>,
): FlagsResult<ServeOptions> {
  let values: Record<string, string | boolean | undefined>;
  try {
    const options: Record<string, { type: "string" | "boolean" }> = {};
    for (const [name, spec] of Object.entries(SERVE_FLAGS)) options[name] = { type: spec.kind };
    values = parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
  function raw(name: string): string | undefined {
    const spec = SERVE_FLAGS[name];
    const value = values[name];
    if (typeof value === "string") return value;
    if (value === true) return "true";
    const fromEnv = spec === undefined ? undefined : env[spec.env];
    return fromEnv ?? spec?.default;
  }
  try {
    const [min, max] = parseRange(raw("sim-latency") ?? "", "--sim-latency");
    return {
      ok: true,
      value: {
        port: parseIntIn(raw("port"), "--port", 0, 65535),
        hostname: raw("hostname") ?? "0.0.0.0",
        plans: raw("plans") ?? "./plans.json",
        dataDir: raw("data-dir") ?? "./data",
        upstream: parseUrl(raw("upstream")),
        upstreamClient: parseClient(raw("upstream-client")),
        adminToken: raw("admin-token"),
        simLatencyMs: { min, max },
        simErrorRate: parseFraction(raw("sim-error-rate"), "--sim-error-rate"),
        workers: parseWorkers(raw("workers")),
        maxBodyBytes: parseBytes(raw("max-body") ?? "", "--max-body"),
        upstreamTimeoutMs: parseDuration(raw("upstream-timeout") ?? "", "--upstream-timeout"),
        leaseMarginMs: parseDuration(raw("lease-margin") ?? "", "--lease-margin"),
        shutdownTimeoutMs: parseDuration(raw("shutdown-timeout") ?? "", "--shutdown-timeout"),
        taskTtlMs: parseDuration(raw("task-ttl") ?? "", "--task-ttl"),
        shadow: parseBool(raw("shadow")),
        allowPrivateWebhooks: parseBool(raw("allow-private-webhooks")),
        authFailuresPerMinute: parseIntIn(
          raw("auth-failures-per-minute"),
          "--auth-failures-per-minute",
          1,
          1_000_000,
        ),
        windowCapacity: parseIntIn(raw("window-capacity"), "--window-capacity", 1, 10_000_000),
      },
    };
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}

/** The `--help` text of `serve`. */
export function serveHelp(): string {
  const lines = Object.entries(SERVE_FLAGS).map(([name, spec]) => {
    const flag = spec.kind === "boolean" ? `--${name}` : `--${name} VALUE`;
    const fallback = spec.default === undefined ? "" : ` (default ${spec.default})`;
    return `  ${flag.padEnd(34)} ${spec.env.padEnd(32)} ${spec.help}${fallback}`;
  });
  return ["Usage: sluice serve [flags]", "", "Flags and their env twins:", ...lines].join("\n");
}

function parseIntIn(value: string | undefined, name: string, min: number, max: number): number {
  const n = Number(value);
  if (value === undefined || !Number.isInteger(n) || n < min || n > max) {
    throw new Error(`${name} must be an integer from ${min} to ${max}, got "${value}"`);
  }
  return n;
}

function parseFraction(value: string | undefined, name: string): number {
  const n = Number(value);
  if (value === undefined || !Number.isFinite(n) || n < 0 || n > 1) {
    throw new Error(`${name} must be a number from 0 to 1, got "${value}"`);
  }
  return n;
}

function parseBool(value: string | undefined): boolean {
  return value !== undefined && /^(1|true|yes|on)$/i.test(value);
}

function parseClient(value: string | undefined): "raw" | "node" | "fetch" {
  if (value === "raw" || value === "node" || value === "fetch") return value;
  throw new Error(`--upstream-client must be raw, node or fetch, got "${value}"`);
}

function parseWorkers(value: string | undefined): number {
  if (value === "auto") return navigator.hardwareConcurrency;
  return parseIntIn(value, "--workers", 1, 256);
}

function parseUrl(value: string | undefined): string | undefined {
  if (value === undefined || value === "") return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`--upstream must be an http(s) URL, got "${value}"`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`--upstream must be an http(s) URL, got "${value}"`);
  }
  return url.href;
}

/** `MIN-MAX` in ms, e.g. `200-1500`; a single number means a fixed latency. */
export function parseRange(value: string, name: string): [number, number] {
  const match = /^(\d+)(?:-(\d+))?$/.exec(value.trim());
  const min = Number(match?.[1]);
  const max = match?.[2] === undefined ? min : Number(match[2]);
  if (match === null || min > max) throw new Error(`${name} must be MIN-MAX in ms, got "${value}"`);
  return [min, max];
}

/** `500ms`, `30s`, `5m`, `24h`; a bare number is seconds. */
export function parseDuration(value: string, name: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(value.trim());
  if (match === null) throw new Error(`${name} must be a duration like 500ms, 30s, 5m, 24h`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] ?? "s"] ?? 1000;
  return Math.round(Number(match[1]) * unit);
}

/** `1048576`, `512KiB`, `1MiB`. */
export function parseBytes(value: string, name: string): number {
  const match = /^(\d+)\s*(B|KiB|KB|MiB|MB)?$/i.exec(value.trim());
  if (match === null) throw new Error(`${name} must be a size like 1048576, 512KiB or 1MiB`);
  const unit = (match[2] ?? "b").toLowerCase();
  const factor = unit.startsWith("m") ? 1_048_576 : unit.startsWith("k") ? 1024 : 1;
  return Number(match[1]) * factor;
}
