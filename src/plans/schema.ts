/**
 * @module
 * The plans file as written (zod schemas, strict: a typo is an error, not a
 * silent default) and as resolved (every default applied). Validation errors
 * name the JSON path of what is wrong, e.g. `accounts.acme.plan`.
 */

import { z } from "zod";
import { MAX_REQUESTS, MAX_WINDOW_MS } from "../limits/window_table.ts";

/** How requests are grouped into rate buckets. */
export const RATE_SCOPES = ["account", "key", "endpoint"] as const;
/** One of {@linkcode RATE_SCOPES}. */
export type RateScope = typeof RATE_SCOPES[number];

/** Defaults for omitted plan fields (SPEC §6.1). */
export const DEFAULT_RATE_LIMIT = { requests: 500, windowMs: 1000, scope: "account" } as const;
/** Default maximum of QUEUED async tasks. */
export const DEFAULT_QUEUE_LIMIT = 100_000;

const positiveInt = (max: number) => z.int().min(1, "must be a positive integer").max(max);

const rateLimitSchema = z.strictObject({
  requests: positiveInt(MAX_REQUESTS).optional(),
  windowMs: positiveInt(MAX_WINDOW_MS).optional(),
  scope: z.enum(RATE_SCOPES).optional(),
});

/** A plan as written in the file. */
export const planSchema = z.strictObject({
  concurrency: positiveInt(1_000_000),
  rateLimit: rateLimitSchema.optional(),
  queueLimit: positiveInt(10_000_000).optional(),
  shadow: z.boolean().optional(),
});

const keyIdSchema = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1-64 of [A-Za-z0-9_.-]");

/** An API key as stored: never the key, only its SHA-256. */
export const keySchema = z.strictObject({
  id: keyIdSchema,
  hash: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'must be "sha256:" and 64 lowercase hex digits'),
  createdAt: z.iso.datetime({ offset: true }),
  revokedAt: z.iso.datetime({ offset: true }).optional(),
  name: z.string().max(200).optional(),
});

/** An account as written in the file. */
export const accountSchema = z.strictObject({
  plan: z.string().min(1),
  keys: z.array(keySchema).default([]),
  webhookSecret: z.string().regex(/^whsec_[A-Za-z0-9+/]{16,}={0,2}$/, "must be whsec_<base64>")
    .optional(),
});

const nameSchema = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1-64 of [A-Za-z0-9_.-]");

/** The whole plans file, with cross-references checked. */
export const plansFileSchema = z.strictObject({
  plans: z.record(nameSchema, planSchema),
  accounts: z.record(nameSchema, accountSchema).default({}),
}).superRefine((file, ctx) => {
  const hashes = new Map<string, string>();
  for (const [accountId, account] of Object.entries(file.accounts)) {
    if (!(account.plan in file.plans)) {
      ctx.addIssue({
        code: "custom",
        path: ["accounts", accountId, "plan"],
        message: `unknown plan "${account.plan}"`,
      });
    }
    const ids = new Set<string>();
    account.keys.forEach((key, i) => {
      if (ids.has(key.id)) {
        ctx.addIssue({
          code: "custom",
          path: ["accounts", accountId, "keys", i, "id"],
          message: `duplicate key id "${key.id}"`,
        });
      }
      ids.add(key.id);
      const owner = hashes.get(key.hash);
      if (owner !== undefined) {
        ctx.addIssue({
          code: "custom",
          path: ["accounts", accountId, "keys", i, "hash"],
          message: `duplicate key hash (also at ${owner})`,
        });
      }
      hashes.set(key.hash, `accounts.${accountId}.keys.${i}`);
    });
  }
});

/** The plans file as written. */
export type PlansFile = z.input<typeof plansFileSchema>;
/** A plan as written. */
export type PlanWritten = z.infer<typeof planSchema>;
/** An account as written. */
export type AccountWritten = z.infer<typeof accountSchema>;
/** A key as written. */
export type KeyWritten = z.infer<typeof keySchema>;

/** A plan with every default applied. */
export interface Plan {
  readonly name: string;
  readonly concurrency: number;
  readonly rateLimit: { readonly requests: number; readonly windowMs: number; scope: RateScope };
  readonly queueLimit: number;
  readonly shadow: boolean;
}

/** Applies the SPEC defaults to a written plan. */
export function resolvePlan(name: string, plan: PlanWritten): Plan {
  return {
    name,
    concurrency: plan.concurrency,
    rateLimit: {
      requests: plan.rateLimit?.requests ?? DEFAULT_RATE_LIMIT.requests,
      windowMs: plan.rateLimit?.windowMs ?? DEFAULT_RATE_LIMIT.windowMs,
      scope: plan.rateLimit?.scope ?? DEFAULT_RATE_LIMIT.scope,
    },
    queueLimit: plan.queueLimit ?? DEFAULT_QUEUE_LIMIT,
    shadow: plan.shadow ?? false,
  };
}

/** One failing field: where and why. */
export interface FieldError {
  path: string;
  message: string;
}

/** Turns zod issues into `{path, message}` pairs with dotted JSON paths. */
export function fieldErrors(error: z.ZodError): FieldError[] {
  return error.issues.map((issue) => ({
    path: issue.path.length === 0 ? "(root)" : issue.path.map(String).join("."),
    message: issue.message,
  }));
}

/** The result of validating a plans document. */
export type ValidationResult =
  | { ok: true; file: z.output<typeof plansFileSchema> }
  | { ok: false; errors: FieldError[] };

/** Validates an already-parsed JSON value as a plans file. */
export function validatePlansFile(value: unknown): ValidationResult {
  const parsed = plansFileSchema.safeParse(value);
  return parsed.success
    ? { ok: true, file: parsed.data }
    : { ok: false, errors: fieldErrors(parsed.error) };
}
