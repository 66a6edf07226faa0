/**
 * @module
 * The dashboard's routes (SPEC §8): the page, a login form that keeps the
 * admin token in an `HttpOnly; SameSite=Strict` cookie, and the live events.
 * The cookie is compared in constant time like the bearer token; the page's
 * writes go to the admin API, which accepts the same cookie (see
 * {@linkcode adminAuth}). Pages are sent with a CSP that allows only their own
 * inline style and script (by hash) and connections to this origin.
 */

import { createHash } from "node:crypto";
import { Hono } from "hono";
import type { Context } from "hono";
import { deleteCookie, getCookie, setCookie } from "hono/cookie";
import { z } from "zod";
import type { DashboardFeed } from "../observe/dashboard_feed.ts";
import {
  DASHBOARD_PAGE,
  DASHBOARD_SCRIPT,
  DASHBOARD_STYLE,
  LOGIN_STYLE,
  type LoginMessage,
  loginPage,
} from "../observe/dashboard_page.ts";
import { ADMIN_COOKIE, tokenMatches } from "./admin.ts";
import type { GatewayEnv } from "./context.ts";
import { HttpError } from "./errors.ts";

/** Options for {@linkcode dashboardRoutes}. */
export interface DashboardOptions {
  feed: DashboardFeed;
  /** The admin token. */
  token: string;
}

const LoginForm = z.object({ token: z.string().max(1024) });

function cspHash(text: string): string {
  return `'sha256-${createHash("sha256").update(text).digest("base64")}'`;
}

function securityHeaders(styles: string, scripts: string): Record<string, string> {
  return {
    "content-security-policy": [
      "default-src 'none'",
      `style-src ${styles}`,
      `script-src ${scripts}`,
      "connect-src 'self'",
      "img-src data:",
      "form-action 'self'",
      "frame-ancestors 'none'",
      "base-uri 'none'",
    ].join("; "),
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
  };
}

const PAGE_HEADERS = securityHeaders(cspHash(DASHBOARD_STYLE), cspHash(DASHBOARD_SCRIPT));
const LOGIN_HEADERS = securityHeaders(cspHash(LOGIN_STYLE), "'none'");

function login(c: Context<GatewayEnv>, status: 200 | 401, message?: LoginMessage): Response {
  return c.html(loginPage(message), status, LOGIN_HEADERS);
}

/** The `/dashboard` routes, to be mounted at `/dashboard`. */
export function dashboardRoutes(options: DashboardOptions): Hono<GatewayEnv> {
  const { feed, token } = options;
  const app = new Hono<GatewayEnv>();

  function signedIn(c: Context<GatewayEnv>): boolean {
    const presented = getCookie(c, ADMIN_COOKIE);
    return presented !== undefined && tokenMatches(presented, token);
  }

  app.get("/", (c) => signedIn(c) ? c.html(DASHBOARD_PAGE, 200, PAGE_HEADERS) : login(c, 200));

  app.post("/login", async (c) => {
    const form = LoginForm.safeParse(await c.req.parseBody().catch(() => ({})));
    if (!form.success || !tokenMatches(form.data.token, token)) return login(c, 401, "wrongToken");
    setCookie(c, ADMIN_COOKIE, form.data.token, {
      httpOnly: true,
      sameSite: "Strict",
      path: "/",
      secure: new URL(c.req.url).protocol === "https:",
    });
    return c.redirect("/dashboard", 303);
  });

  app.post("/logout", (c) => {
    deleteCookie(c, ADMIN_COOKIE, { path: "/" });
    return c.redirect("/dashboard", 303);
  });

  app.get("/events", (c) => {
    if (!signedIn(c)) {
      throw new HttpError(401, "MISSING_API_KEY", "log in at /dashboard first");
    }
    return c.body(feed.stream(), 200, {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    });
  });

  return app;
}
