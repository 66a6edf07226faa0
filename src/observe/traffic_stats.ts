/**
 * @module
 * Per-account traffic over the last minute, for the dashboard: requests and
 * 429s (by reason) in one-second buckets of a 60-slot ring. Recording is an
 * array increment; reading builds the sparkline and the one-minute totals.
 */

import type { LimitDecision } from "./request_log.ts";

const SECONDS = 60;

interface AccountTraffic {
  /** Second (epoch) each slot holds. */
  seconds: Float64Array;
  requests: Uint32Array;
  rate: Uint32Array;
  concurrency: Uint32Array;
}

/** One account's last minute. */
export interface TrafficView {
  /** Requests in the last complete second. */
  requestsPerSecond: number;
  /** Requests per second over the last minute, oldest first. */
  sparkline: number[];
  /** 429s in the last minute by reason. */
  rejectedLastMinute: { rate: number; concurrency: number };
}

/** Last-minute counters per account. */
export class TrafficStats {
  #accounts = new Map<string, AccountTraffic>();

  /** Counts one request of `accountId` at `nowMs`. */
  record(accountId: string, decision: LimitDecision, nowMs: number): void {
    let traffic = this.#accounts.get(accountId);
    if (traffic === undefined) {
      traffic = {
        seconds: new Float64Array(SECONDS).fill(-1),
        requests: new Uint32Array(SECONDS),
        rate: new Uint32Array(SECONDS),
        concurrency: new Uint32Array(SECONDS),
      };
      this.#accounts.set(accountId, traffic);
    }
    const second = Math.floor(nowMs / 1000);
    const slot = second % SECONDS;
    if (traffic.seconds[slot] !== second) {
      traffic.seconds[slot] = second;
      traffic.requests[slot] = 0;
      traffic.rate[slot] = 0;
      traffic.concurrency[slot] = 0;
    }
    traffic.requests[slot] = (traffic.requests[slot] ?? 0) + 1;
    if (decision === "rate") traffic.rate[slot] = (traffic.rate[slot] ?? 0) + 1;
    if (decision === "concurrency") {
      traffic.concurrency[slot] = (traffic.concurrency[slot] ?? 0) + 1;
    }
  }

  /** The last minute of `accountId` as seen at `nowMs`. */
  view(accountId: string, nowMs: number): TrafficView {
    const traffic = this.#accounts.get(accountId);
    const now = Math.floor(nowMs / 1000);
    const sparkline: number[] = [];
    let rate = 0;
    let concurrency = 0;
    for (let second = now - SECONDS + 1; second <= now; second++) {
      const slot = second % SECONDS;
      const live = traffic !== undefined && traffic.seconds[slot] === second;
      sparkline.push(live ? traffic.requests[slot] ?? 0 : 0);
      if (live) {
        rate += traffic.rate[slot] ?? 0;
        concurrency += traffic.concurrency[slot] ?? 0;
      }
    }
    return {
      requestsPerSecond: sparkline[SECONDS - 2] ?? 0,
      sparkline,
      rejectedLastMinute: { rate, concurrency },
    };
  }

  /** Forgets accounts with nothing in the last minute. */
  prune(nowMs: number): void {
    const oldest = Math.floor(nowMs / 1000) - SECONDS;
    for (const [id, traffic] of this.#accounts) {
      if (traffic.seconds.every((s) => s < oldest)) this.#accounts.delete(id);
    }
  }
}
