/**
 * @module
 * The forwarder a gateway (or a worker isolate) uses: the real upstream when
 * one is configured, else the built-in simulator.
 */

import type { Forwarder } from "./forwarder.ts";
import { HttpProxy } from "./proxy.ts";
import { Simulator } from "./simulator.ts";

/** The settings both choices draw on. */
export interface ForwarderSettings {
  upstream: string | undefined;
  upstreamTimeoutMs: number;
  simLatencyMs: { min: number; max: number };
  simErrorRate: number;
  maxBodyBytes: number;
}

/** An {@linkcode HttpProxy} to `upstream`, or a {@linkcode Simulator} without one. */
export function chooseForwarder(settings: ForwarderSettings): Forwarder {
  return settings.upstream === undefined
    ? new Simulator({
      latencyMs: settings.simLatencyMs,
      errorRate: settings.simErrorRate,
      maxBodyBytes: settings.maxBodyBytes,
    })
    : new HttpProxy(settings.upstream, {
      timeoutMs: settings.upstreamTimeoutMs,
      maxBodyBytes: settings.maxBodyBytes,
    });
}
