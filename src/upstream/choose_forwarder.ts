/**
 * @module
 * The forwarder a gateway (or a worker isolate) uses: the real upstream when
 * one is configured (through `node:http` by default, or our pooled raw
 * HTTP/1.1 client or `fetch` with `--upstream-client`), else the built-in simulator.
 */

import type { Forwarder } from "./forwarder.ts";
import { FetchProxy } from "./fetch_proxy.ts";
import { HttpProxy } from "./proxy.ts";
import { RawProxy } from "./raw_proxy.ts";
import { Simulator } from "./simulator.ts";

/** Which HTTP client forwards to a real upstream. */
export type UpstreamClient = "raw" | "node" | "fetch";

/** The settings both choices draw on. */
export interface ForwarderSettings {
  upstream: string | undefined;
  /** Default `node` (`node:http`, maintained); `raw` is our own pooled HTTP/1.1 client. */
  upstreamClient?: UpstreamClient;
  upstreamTimeoutMs: number;
  simLatencyMs: { min: number; max: number };
  simErrorRate: number;
  maxBodyBytes: number;
}

/** A proxy to `upstream` with the chosen client, or a {@linkcode Simulator} without one. */
export function chooseForwarder(settings: ForwarderSettings): Forwarder {
  if (settings.upstream === undefined) {
    return new Simulator({
      latencyMs: settings.simLatencyMs,
      errorRate: settings.simErrorRate,
      maxBodyBytes: settings.maxBodyBytes,
    });
  }
  const options = { timeoutMs: settings.upstreamTimeoutMs, maxBodyBytes: settings.maxBodyBytes };
  switch (settings.upstreamClient ?? "node") {
    case "raw":
      return new RawProxy(settings.upstream, options);
    case "fetch":
      return new FetchProxy(settings.upstream, options);
    default:
      return new HttpProxy(settings.upstream, options);
  }
}
