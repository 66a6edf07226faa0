/**
 * @module
 * The admin API (SPEC §6.2): plans, accounts, keys, webhook secrets, reload
 * and status, behind `Authorization: Bearer <admin token>` (or the dashboard's
 * cookie) compared in constant time. Every write goes through the one {@linkcode PlansWriter}, so
 * it is serialised, validated as a whole file, written atomically and live
 * for the next request. Handlers are thin: parse, call one edit, map it.
 */

import { timingSafeEqual } from "node:crypto";
import { createHash } from "node:crypto";
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { getCookie } from "hono/cookie";
import type { Clock } from "../limits/clock.ts";
import type { Limiter } from "../limits/limiter.ts";
import { createKey, type EditResult, revokeKey } from "../plans/key_admin.ts";
import {
  deleteAccount,
  deletePlan,
  patchAccount,
  putAccount,
  putPlan,
  rotateWebhookSecret,
} from "../plans/plan_admin.ts";
import type { PlansWatcher } from "../plans/plans_watcher.ts";
import type { InvalidEdit, PlansWriter } from "../plans/plans_writer.ts";
import { planSchema, resolvePlan } from "../plans/schema.ts";
import type { ConfigStore } from "../plans/snapshot.ts";
import type { GatewayEnv } from "./context.ts";
import { type ErrorCode, HttpError } from "./errors.ts";
import { validationHook } from "./validation.ts";

/** Options for {@linkcode adminRoutes}. */
export interface AdminOptions {
  token: string;
  config: ConfigStore;
  writer: PlansWriter;
  watcher: PlansWatcher | undefined;
  limiter: Limiter;
  clock: Clock;
  startedAtMs: number;
}

function digest(text: string): Uint8Array {
  return createHash("sha256").update(text).digest();
}

/** Whether `presented` equals `token`, in time independent of where they differ. */
export function tokenMatches(presented: string, token: string): boolean {
  return timingSafeEqual(digest(presented), digest(token));
}

/** The cookie in which the dashboard keeps the admin token. */
export const ADMIN_COOKIE = "sluice_admin";

/**
 * Requires the admin token as a bearer token or, for the dashboard, in the
 * {@linkcode ADMIN_COOKIE} cookie. A browser sends the cookie by itself, so
 * cookie-authenticated writes must also carry `x-sluice-dashboard: 1`, which
 * another site's form cannot add and its script cannot send without a CORS
 * preflight that this API never answers.
 */
export function adminAuth(options: { token: string }): MiddlewareHandler<GatewayEnv> {
  const { token } = options;
  return async function adminAuth(c, next) {
    const header = c.req.header("authorization");
    const cookie = header === undefined ? getCookie(c, ADMIN_COOKIE) : undefined;
    if (cookie !== undefined) {
      if (!tokenMatches(cookie, token)) {
        throw new HttpError(401, "INVALID_OR_EXPIRED_API_KEY", "wrong admin token; log in again");
      }
      const safe = c.req.method === "GET" || c.req.method === "HEAD";
      if (!safe && c.req.header("x-sluice-dashboard") !== "1") {
        throw new HttpError(
          401,
          "MISSING_API_KEY",
          "writes authenticated by the dashboard cookie need the header x-sluice-dashboard: 1",
        );
      }
      return await next();
    }
    const match = header === undefined ? null : /^Bearer[ \t]+(\S+)\s*$/i.exec(header);
    if (match?.[1] === undefined) {
      throw new HttpError(
        401,
        "MISSING_API_KEY",
        "send the admin token as Authorization: Bearer <token>",
        {
          headers: { "www-authenticate": 'Bearer realm="sluice-admin"' },
        },
      );
    }
    if (!tokenMatches(match[1], token)) {
      throw new HttpError(401, "INVALID_OR_EXPIRED_API_KEY", "wrong admin token", {
        headers: { "www-authenticate": 'Bearer realm="sluice-admin", error="invalid_token"' },
      });
    }
    await next();
  };
}

const NameParam = z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, "must be 1-64 of [A-Za-z0-9_.-]");
const security = [{ adminToken: [] }];
const ok = {
  description: "done",
  content: { "application/json": { schema: z.object({ success: z.literal(true) }).passthrough() } },
};

const AccountBody = z.strictObject({
  plan: NameParam,
  webhookSecret: z.string().regex(/^whsec_[A-Za-z0-9+/]{16,}={0,2}$/).optional(),
}).openapi("AccountInput");
const AccountPatch = z.strictObject({
  plan: NameParam.optional(),
}).openapi("AccountPatch");

function mapFailure(result: { status: 400 | 404 | 409; message: string } | InvalidEdit): never {
  const code: ErrorCode = result.status === 404
    ? "RESOURCE_NOT_FOUND"
    : result.status === 409
    ? "CONFLICT"
    : "VALIDATION_ERROR";
  const details = "errors" in result ? { fields: result.errors } : undefined;
  throw new HttpError(result.status, code, result.message, { details });
}

function settled<T extends object>(result: EditResult<T> | InvalidEdit): T & { ok: true } {
  if (!result.ok) mapFailure(result);
  return result;
}

/** The `/admin/*` routes, to be mounted at `/admin`. */
export function adminRoutes(options: AdminOptions): OpenAPIHono<GatewayEnv> {
  const { config, writer, watcher, limiter, clock, startedAtMs } = options;
  const app = new OpenAPIHono<GatewayEnv>({ defaultHook: validationHook });
  app.use("*", adminAuth({ token: options.token }));

  app.openapi(
    createRoute({ method: "get", path: "/status", security, responses: { 200: ok } }),
    (c) => {
      const snapshot = config.current;
      const last = config.lastReload;
      return c.json({
        success: true as const,
        config: {
          version: snapshot.version,
          loadedAt: snapshot.loadedAt.toISOString(),
          path: writer.path,
          plans: snapshot.plans.size,
          accounts: snapshot.accounts.size,
        },
        lastReload: {
          ok: last.ok,
          at: last.at.toISOString(),
          source: last.source,
          errors: last.errors,
        },
        reloads: watcher?.counts ?? { applied: 0, invalid: 0 },
        uptimeSeconds: Math.round((clock.nowMs() - startedAtMs) / 1000),
      }, 200);
    },
  );

  app.openapi(
    createRoute({ method: "get", path: "/plans", security, responses: { 200: ok } }),
    (c) => {
      const plans = Object.fromEntries(config.current.plans);
      return c.json({ success: true as const, plans }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "put",
      path: "/plans/{name}",
      security,
      responses: { 200: ok },
      request: {
        params: z.object({ name: NameParam }),
        body: { content: { "application/json": { schema: planSchema } }, required: true },
      },
    }),
    async (c) => {
      const { name } = c.req.valid("param");
      const plan = c.req.valid("json");
      const result = settled(await writer.update((doc) => putPlan(doc, name, plan)));
      return c.json({
        success: true as const,
        created: result.created,
        plan: resolvePlan(name, plan),
      }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "delete",
      path: "/plans/{name}",
      security,
      responses: { 200: ok },
      request: { params: z.object({ name: NameParam }) },
    }),
    async (c) => {
      const { name } = c.req.valid("param");
      settled(await writer.update((doc) => deletePlan(doc, name)));
      return c.json({ success: true as const, deleted: name }, 200);
    },
  );

  function accountView(id: string) {
    const written = config.current.document.accounts?.[id];
    const live = config.current.accounts.get(id);
    if (written === undefined || live === undefined) {
      throw new HttpError(404, "RESOURCE_NOT_FOUND", `no account "${id}"`);
    }
    return {
      id,
      plan: written.plan,
      limits: live.plan,
      keys: (written.keys ?? []).map((k) => ({
        id: k.id,
        createdAt: k.createdAt,
        ...(k.revokedAt === undefined ? {} : { revokedAt: k.revokedAt }),
      })),
      hasWebhookSecret: written.webhookSecret !== undefined,
      usage: { slotsInUse: limiter.slotsInUse(id) },
    };
  }

  app.openapi(
    createRoute({ method: "get", path: "/accounts", security, responses: { 200: ok } }),
    (c) => {
      const accounts = [...config.current.accounts.keys()].map(accountView);
      return c.json({ success: true as const, accounts }, 200);
    },
  );

  const idParams = { params: z.object({ id: NameParam }) };
  app.openapi(
    createRoute({
      method: "get",
      path: "/accounts/{id}",
      security,
      responses: { 200: ok },
      request: idParams,
    }),
    (c) => {
      return c.json({ success: true as const, account: accountView(c.req.valid("param").id) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "put",
      path: "/accounts/{id}",
      security,
      responses: { 200: ok },
      request: {
        ...idParams,
        body: { content: { "application/json": { schema: AccountBody } }, required: true },
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const body = c.req.valid("json");
      const result = settled(await writer.update((doc) => putAccount(doc, id, body)));
      return c.json(
        { success: true as const, created: result.created, account: accountView(id) },
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      method: "patch",
      path: "/accounts/{id}",
      security,
      responses: { 200: ok },
      request: {
        ...idParams,
        body: { content: { "application/json": { schema: AccountPatch } }, required: true },
      },
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const body = c.req.valid("json");
      settled(await writer.update((doc) => patchAccount(doc, id, body)));
      return c.json({ success: true as const, account: accountView(id) }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "delete",
      path: "/accounts/{id}",
      security,
      responses: { 200: ok },
      request: idParams,
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      settled(await writer.update((doc) => deleteAccount(doc, id)));
      return c.json({ success: true as const, deleted: id }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "post",
      path: "/accounts/{id}/keys",
      security,
      responses: { 200: ok },
      request: idParams,
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const result = settled(await writer.update((doc, now) => createKey(doc, id, now)));
      return c.json({ success: true as const, id: result.keyId, key: result.apiKey }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "delete",
      path: "/accounts/{id}/keys/{keyId}",
      security,
      responses: { 200: ok },
      request: { params: z.object({ id: NameParam, keyId: NameParam }) },
    }),
    async (c) => {
      const { id, keyId } = c.req.valid("param");
      settled(await writer.update((doc, now) => revokeKey(doc, id, keyId, now)));
      return c.json({ success: true as const, revoked: keyId }, 200);
    },
  );

  app.openapi(
    createRoute({
      method: "post",
      path: "/accounts/{id}/webhook-secret",
      security,
      responses: { 200: ok },
      request: idParams,
    }),
    async (c) => {
      const { id } = c.req.valid("param");
      const result = settled(await writer.update((doc) => rotateWebhookSecret(doc, id)));
      return c.json({ success: true as const, webhookSecret: result.webhookSecret }, 200);
    },
  );

  app.openapi(
    createRoute({ method: "post", path: "/reload", security, responses: { 200: ok } }),
    async (c) => {
      if (watcher === undefined) {
        throw new HttpError(503, "SERVICE_UNAVAILABLE", "no plans watcher is running");
      }
      const outcome = await watcher.reloadNow("admin");
      if (outcome.result === "invalid") {
        throw new HttpError(
          400,
          "VALIDATION_ERROR",
          "the plans file is invalid; the last good config stays live",
          {
            details: { fields: outcome.errors },
          },
        );
      }
      return c.json({
        success: true as const,
        result: outcome.result,
        version: config.current.version,
      }, 200);
    },
  );

  return app;
}
