/**
 * @module
 * Changes to keys in a plans document, as pure functions from one document to
 * the next. The CLI and the admin API both use them, then write the result
 * atomically; the plaintext key exists only in the return value.
 */

import { generateApiKey, generateId, hashApiKey } from "./api_key.ts";
import type { PlansFile } from "./schema.ts";

/** A document change that may fail with a message for the user. */
export type EditResult<T> =
  | ({ ok: true; document: PlansFile } & T)
  | { ok: false; status: 400 | 404 | 409; message: string };

/** Adds a new key to `accountId`; returns the key in plaintext, once. */
export function createKey(
  document: PlansFile,
  accountId: string,
  now: Date,
): EditResult<{ keyId: string; apiKey: string }> {
  const account = document.accounts?.[accountId];
  if (account === undefined) {
    return { ok: false, status: 404, message: `no account "${accountId}"` };
  }
  const apiKey = generateApiKey();
  const keyId = generateId("key");
  const next = structuredClone(document);
  const target = next.accounts?.[accountId];
  if (target === undefined) return { ok: false, status: 404, message: `no account "${accountId}"` };
  target.keys = [
    ...(target.keys ?? []),
    { id: keyId, hash: hashApiKey(apiKey), createdAt: now.toISOString() },
  ];
  return { ok: true, document: next, keyId, apiKey };
}

/** Marks key `keyId` of `accountId` revoked (kept for the record, no longer valid). */
export function revokeKey(
  document: PlansFile,
  accountId: string,
  keyId: string,
  now: Date,
): EditResult<Record<never, never>> {
  const next = structuredClone(document);
  const account = next.accounts?.[accountId];
  if (account === undefined) {
    return { ok: false, status: 404, message: `no account "${accountId}"` };
  }
  const key = account.keys?.find((k) => k.id === keyId);
  if (key === undefined) {
    return { ok: false, status: 404, message: `no key "${keyId}" on account "${accountId}"` };
  }
  if (key.revokedAt !== undefined) {
    return { ok: false, status: 409, message: `key "${keyId}" is already revoked` };
  }
  key.revokedAt = now.toISOString();
  return { ok: true, document: next };
}
