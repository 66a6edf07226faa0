/**
 * @module
 * Names of rate buckets. A request counts against one bucket chosen by its
 * plan's scope: the account, the API key, or the account × endpoint. The set
 * of endpoints is closed (known providers, then "other"), so every bucket a
 * config can use is known in advance, which lets the control plane hand
 * identical bucket → entry assignments to every worker isolate.
 */

import type { ConfigSnapshot } from "../plans/snapshot.ts";
import type { RateShape } from "./limiter.ts";

/** The endpoints of `endpoint`-scoped plans, beyond `monitor/<provider>`. */
const OTHER_ENDPOINTS = ["monitor/other", "async", "limits", "other"] as const;

/** The endpoint a path counts against, e.g. `/v1/monitor/chatgpt` → `monitor/chatgpt`. */
export function endpointOf(path: string, providers: ReadonlySet<string>): string {
  const parts = path.split("/", 4);
  switch (parts[2]) {
    case "monitor": {
      const provider = (parts[3] ?? "").toLowerCase();
      return providers.has(provider) ? `monitor/${provider}` : "monitor/other";
    }
    case "async":
      return "async";
    case "limits":
      return "limits";
    default:
      return "other";
  }
}

/** The bucket key for an account under its plan's scope. */
export function rateBucketKey(
  accountId: string,
  scope: "account" | "key" | "endpoint",
  keyId: string,
  endpoint: string,
): string {
  switch (scope) {
    case "key":
      return `rate:${accountId}:key:${keyId}`;
    case "endpoint":
      return `rate:${accountId}:ep:${endpoint}`;
    default:
      return `rate:${accountId}`;
  }
}

/** Every bucket key `snapshot` can use, with its shape. */
export function bucketKeysOf(
  snapshot: ConfigSnapshot,
  providers: ReadonlySet<string>,
): [string, RateShape][] {
  const out: [string, RateShape][] = [];
  const keyIds = new Map<string, string[]>();
  for (const owner of snapshot.keysByHash.values()) {
    const ids = keyIds.get(owner.account.id) ?? [];
    ids.push(owner.keyId);
    keyIds.set(owner.account.id, ids);
  }
  const endpoints = [...[...providers].map((p) => `monitor/${p}`), ...OTHER_ENDPOINTS];
  for (const account of snapshot.accounts.values()) {
    const { scope, requests, windowMs } = account.plan.rateLimit;
    const shape = { requests, windowMs };
    if (scope === "key") {
      for (const keyId of keyIds.get(account.id) ?? []) {
        out.push([rateBucketKey(account.id, scope, keyId, ""), shape]);
      }
    } else if (scope === "endpoint") {
      for (const endpoint of endpoints) {
        out.push([rateBucketKey(account.id, scope, "", endpoint), shape]);
      }
    } else {
      out.push([rateBucketKey(account.id, scope, "", ""), shape]);
    }
  }
  return out;
}
