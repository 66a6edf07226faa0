/**
 * @module
 * Changes to plans and accounts in a plans document, as pure functions from
 * one document to the next (see `key_admin.ts` for keys). Each returns a new
 * document or a refusal with a status; the writer validates the whole result.
 */

import { generateWebhookSecret } from "./api_key.ts";
import type { EditResult } from "./key_admin.ts";
import type { AccountWritten, PlansFile, PlanWritten } from "./schema.ts";

/** Creates or replaces plan `name`. */
export function putPlan(
  document: PlansFile,
  name: string,
  plan: PlanWritten,
): EditResult<{ created: boolean }> {
  const next = structuredClone(document);
  const created = !(name in next.plans);
  next.plans[name] = plan;
  return { ok: true, document: next, created };
}

/** Deletes plan `name`; refused while an account uses it. */
export function deletePlan(document: PlansFile, name: string): EditResult<Record<never, never>> {
  if (!(name in document.plans)) return { ok: false, status: 404, message: `no plan "${name}"` };
  const users = Object.entries(document.accounts ?? {}).filter(([, a]) => a.plan === name)
    .map(([id]) => id);
  if (users.length > 0) {
    return {
      ok: false,
      status: 409,
      message: `plan "${name}" is in use by account(s): ${users.join(", ")}`,
    };
  }
  const next = structuredClone(document);
  delete next.plans[name];
  return { ok: true, document: next };
}

/** The fields an admin may set on an account (keys have their own routes). */
export interface AccountFields {
  plan?: string | undefined;
  webhookSecret?: string | undefined;
}

/** Creates account `id` or replaces its plan and secret, keeping its keys. */
export function putAccount(
  document: PlansFile,
  id: string,
  fields: AccountFields & { plan: string },
): EditResult<{ created: boolean }> {
  const next = structuredClone(document);
  next.accounts ??= {};
  const existing = next.accounts[id];
  const account: AccountWritten = {
    plan: fields.plan,
    keys: existing?.keys ?? [],
    ...(fields.webhookSecret !== undefined
      ? { webhookSecret: fields.webhookSecret }
      : existing?.webhookSecret !== undefined
      ? { webhookSecret: existing.webhookSecret }
      : { webhookSecret: generateWebhookSecret() }),
  };
  next.accounts[id] = account;
  return { ok: true, document: next, created: existing === undefined };
}

/** Changes some fields of an existing account (e.g. `{plan: "business"}`). */
export function patchAccount(
  document: PlansFile,
  id: string,
  fields: AccountFields,
): EditResult<Record<never, never>> {
  const next = structuredClone(document);
  const account = next.accounts?.[id];
  if (account === undefined) return { ok: false, status: 404, message: `no account "${id}"` };
  if (fields.plan !== undefined) account.plan = fields.plan;
  if (fields.webhookSecret !== undefined) account.webhookSecret = fields.webhookSecret;
  return { ok: true, document: next };
}

/** Deletes account `id` and with it its keys. */
export function deleteAccount(document: PlansFile, id: string): EditResult<Record<never, never>> {
  const next = structuredClone(document);
  if (next.accounts?.[id] === undefined) {
    return { ok: false, status: 404, message: `no account "${id}"` };
  }
  delete next.accounts[id];
  return { ok: true, document: next };
}

/** Gives account `id` a new webhook secret; returns it, once. */
export function rotateWebhookSecret(
  document: PlansFile,
  id: string,
): EditResult<{ webhookSecret: string }> {
  const webhookSecret = generateWebhookSecret();
  const result = patchAccount(document, id, { webhookSecret });
  return result.ok ? { ...result, webhookSecret } : result;
}
