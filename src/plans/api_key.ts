/**
 * @module
 * API keys: generated with the Web Crypto RNG, stored only as SHA-256 hashes,
 * compared in constant time. Hashing is synchronous (`node:crypto`) so that
 * authentication adds no promise to the request path.
 */

import { createHash } from "node:crypto";

const KEY_FORMAT = /^[A-Za-z0-9_-]{16,256}$/;
const HASH_PREFIX = "sha256:";

/** Whether `key` has the shape of an API key (16–256 of `[A-Za-z0-9_-]`). */
export function isWellFormedApiKey(key: string): boolean {
  return KEY_FORMAT.test(key);
}

/** A new API key: `sk_` and 32 random bytes, base64url. */
export function generateApiKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return `sk_${base64Url(bytes)}`;
}

/** A new webhook signing secret in the Standard Webhooks form `whsec_<base64>`. */
export function generateWebhookSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  return `whsec_${btoa(String.fromCharCode(...bytes))}`;
}

/** A random id with a prefix, e.g. `key_3f9a…`. */
export function generateId(prefix: string): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return `${prefix}_${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** The stored form of `key`: `sha256:<64 hex>`. */
export function hashApiKey(key: string): string {
  return HASH_PREFIX + createHash("sha256").update(key).digest("hex");
}

/** Compares two stored hashes in time independent of where they differ (for equal lengths). */
export function hashesEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function base64Url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_")
    .replaceAll("=", "");
}
