/**
 * @module
 * What both upstream clients agree on: which headers pass (everything but
 * `Authorization`, `Host`, the hop-by-hop headers and the dashboard's admin
 * cookie), what the gateway adds (`X-Account-Id`, `X-Plan`, `X-Request-ID`,
 * `X-Forwarded-For`), where a request goes, and how a failure is answered
 * (502 unreachable, 504 too slow).
 */

import { ADMIN_COOKIE } from "../http/admin.ts";
import { HttpError } from "../http/errors.ts";
import type { ForwardContext } from "./forwarder.ts";

const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** Options of the upstream clients. */
export interface HttpProxyOptions {
  /** Bound on the whole upstream exchange, headers and body. */
  timeoutMs?: number;
  /** Largest request body passed on. */
  maxBodyBytes?: number;
}

/** Copies `headers` without hop-by-hop ones (and those `Connection` names). */
export function endToEndHeaders(headers: Headers, drop: readonly string[] = []): Headers {
  const out = new Headers();
  const named = (headers.get("connection") ?? "").toLowerCase().split(",").map((s) => s.trim());
  for (const [name, value] of headers) {
    if (HOP_BY_HOP.has(name) || named.includes(name) || drop.includes(name)) continue;
    out.append(name, value);
  }
  return out;
}

/** Whether a response header named `name` passes back to the client. */
export function isEndToEnd(name: string, connectionNamed: readonly string[]): boolean {
  return !HOP_BY_HOP.has(name) && !connectionNamed.includes(name);
}

/** Removes cookie `name` (the dashboard's admin session) from what goes upstream. */
export function stripCookie(headers: Headers, name: string): void {
  const cookie = headers.get("cookie");
  if (cookie === null) return;
  const kept = cookie.split(";").map((part) => part.trim())
    .filter((part) => part !== "" && !part.startsWith(`${name}=`));
  if (kept.length === 0) headers.delete("cookie");
  else headers.set("cookie", kept.join("; "));
}

/** The headers sent upstream for `request` (`dropLength` when the body is re-framed). */
export function upstreamRequestHeaders(
  request: Request,
  context: ForwardContext,
  dropLength: boolean,
): Headers {
  const drop = dropLength ? ["authorization", "host", "content-length"] : ["authorization", "host"];
  const headers = endToEndHeaders(request.headers, drop);
  stripCookie(headers, ADMIN_COOKIE);
  headers.set("x-account-id", context.accountId);
  headers.set("x-plan", context.planName);
  headers.set("x-request-id", context.requestId);
  if (context.clientAddress !== undefined) {
    headers.append("x-forwarded-for", context.clientAddress);
  }
  return headers;
}

/** The upstream URL for `requestUrl`: the base URL's path prefixed, query kept. */
export function upstreamUrl(base: URL, requestUrl: string): URL {
  const incoming = new URL(requestUrl);
  const target = new URL(base);
  target.pathname = base.pathname.endsWith("/")
    ? base.pathname.slice(0, -1) + incoming.pathname
    : base.pathname + incoming.pathname;
  target.search = incoming.search;
  return target;
}

/** The answer to a failed exchange: a 504 when it timed out, else a 502. */
export function upstreamFailure(error: unknown, timedOut: boolean, timeoutMs: number): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof Error && error.cause instanceof HttpError) return error.cause;
  if (timedOut) {
    return new HttpError(
      504,
      "UPSTREAM_TIMEOUT",
      `upstream did not answer within ${timeoutMs} ms`,
      {
        cause: error,
      },
    );
  }
  return new HttpError(502, "UPSTREAM_ERROR", "upstream unreachable or failed", { cause: error });
}
