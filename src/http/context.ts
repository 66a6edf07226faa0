/**
 * @module
 * The hono environment shared by every middleware and route: what the
 * connection told us (bindings) and what earlier middleware found out
 * (variables), typed once here.
 */

import type { Lease } from "../limits/lease.ts";
import type { LimitDecision } from "../observe/request_log.ts";
import type { Account, KeyOwner } from "../plans/snapshot.ts";

/** The rate decision made for this request. */
export interface RateInfo {
  limit: number;
  remaining: number;
  windowMs: number;
  bucketKey: string;
  /** Denied by the limit but let through because of shadow mode. */
  shadowed: boolean;
}

/** The concurrency decision made for this request (monitor routes only). */
export interface SlotInfo {
  limit: number;
  current: number;
  lease: Lease | undefined;
  shadowed: boolean;
}

/** Hono env of the gateway. */
export interface GatewayEnv {
  Bindings: { remoteAddr?: Deno.NetAddr };
  Variables: {
    requestId: string;
    /** The one clock read admission decisions use. */
    nowMs: number;
    keyOwner: KeyOwner;
    account: Account;
    rate: RateInfo;
    slot: SlotInfo;
    /** How the limits treated this request, for the log (unset: admitted). */
    decision: LimitDecision;
  };
}
