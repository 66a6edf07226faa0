/**
 * @module
 * API-key authentication. The key is checked for shape, hashed (SHA-256) and
 * looked up by hash; the stored hash is confirmed in constant time. Failed
 * attempts are counted per client IP in a sliding window: once an address
 * has failed too often it gets 429 before its key is even looked at.
 */

import type { MiddlewareHandler } from "hono";
import type { Limiter } from "../limits/limiter.ts";
import { hashApiKey, isWellFormedApiKey } from "../plans/api_key.ts";
import {
  type ConfigSnapshot,
  type ConfigStore,
  findKeyOwner,
  type KeyOwner,
} from "../plans/snapshot.ts";
import type { GatewayEnv } from "./context.ts";
import { HttpError } from "./errors.ts";

const MAX_CACHED_KEYS = 10_000;

/** Options for {@linkcode apiKeyAuth}. */
export interface ApiKeyAuthOptions {
  config: ConfigStore;
  limiter: Limiter;
  /** Failed attempts allowed per client IP per `failureWindowMs`. */
  failuresPerWindow?: number;
  failureWindowMs?: number;
}

/** Resolves `Authorization: Bearer <key>` to an account or answers 401. */
export function apiKeyAuth(options: ApiKeyAuthOptions): MiddlewareHandler<GatewayEnv> {
  const { config, limiter, failuresPerWindow = 30, failureWindowMs = 60_000 } = options;
  const failureShape = { requests: failuresPerWindow, windowMs: failureWindowMs };

  function fail(ipKey: string, nowMs: number, error: HttpError): never {
    limiter.tryAdmit(ipKey, failureShape, nowMs);
    throw error;
  }

  // Keys already resolved against the live snapshot, so a busy key is hashed once
  // per config version rather than once per request. Bounded; dropped on every swap.
  let cacheFor: ConfigSnapshot | undefined;
  const cache = new Map<string, KeyOwner>();
  function resolve(apiKey: string): KeyOwner | undefined {
    const snapshot = config.current;
    if (snapshot !== cacheFor) {
      cache.clear();
      cacheFor = snapshot;
    }
    const cached = cache.get(apiKey);
    if (cached !== undefined) return cached;
    const owner = findKeyOwner(snapshot, hashApiKey(apiKey));
    if (owner !== undefined && cache.size < MAX_CACHED_KEYS) cache.set(apiKey, owner);
    return owner;
  }

  return async function apiKeyAuth(c, next) {
    const nowMs = c.get("nowMs");
    const ipKey = `auth-fail:${c.env?.remoteAddr?.hostname ?? "unknown"}`;
    if (limiter.used(ipKey, nowMs) >= failuresPerWindow) {
      c.set("decision", "auth");
      const retryAfterSeconds = Math.max(1, Math.ceil(limiter.msUntilFree(ipKey, nowMs) / 1000));
      throw new HttpError(429, "RATE_LIMIT_EXCEEDED", "too many failed authentication attempts", {
        details: { limit: failuresPerWindow, scope: "ip" },
        headers: { "retry-after": String(retryAfterSeconds) },
      });
    }
    const header = c.req.header("authorization");
    const match = header === undefined ? null : /^Bearer[ \t]+(\S*)\s*$/i.exec(header);
    if (match === null || match[1] === undefined || match[1] === "") {
      fail(
        ipKey,
        nowMs,
        new HttpError(401, "MISSING_API_KEY", "send the API key as Authorization: Bearer <key>", {
          headers: { "www-authenticate": 'Bearer realm="sluice"' },
        }),
      );
    }
    const apiKey = match[1];
    if (!isWellFormedApiKey(apiKey)) {
      fail(
        ipKey,
        nowMs,
        new HttpError(
          401,
          "INVALID_API_KEY_FORMAT",
          "an API key is 16-256 characters of A-Z, a-z, 0-9, _ and -",
          { headers: { "www-authenticate": 'Bearer realm="sluice", error="invalid_token"' } },
        ),
      );
    }
    const owner = resolve(apiKey);
    if (owner === undefined) {
      fail(
        ipKey,
        nowMs,
        new HttpError(401, "INVALID_OR_EXPIRED_API_KEY", "the API key is unknown or revoked", {
          headers: { "www-authenticate": 'Bearer realm="sluice", error="invalid_token"' },
        }),
      );
    }
    c.set("keyOwner", owner);
    c.set("account", owner.account);
    await next();
  };
}
