/**
 * @module
 * Forwarding to a real upstream. Method, path, query, body and headers pass
 * through unchanged except `Authorization`, `Host` and the hop-by-hop
 * headers; the gateway adds `X-Account-Id`, `X-Plan`, `X-Request-ID` and
 * `X-Forwarded-For`. Both bodies stream. The whole exchange is bounded by
 * `timeoutMs` and cancelled when the client goes away: an unreachable
 * upstream is a 502, a slow one a 504.
 */

import { ADMIN_COOKIE } from "../http/admin.ts";
import { HttpError } from "../http/errors.ts";
import { limitBody } from "./body_limit.ts";
import type { ForwardContext, Forwarder } from "./forwarder.ts";

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

/** Content codings Deno's `fetch` decodes transparently (it asks for `gzip,br`). */
const FETCH_DECODES = new Set(["gzip", "br"]);

/** Options for {@linkcode HttpProxy}. */
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

/** Forwards to one upstream base URL with `fetch`. */
export class HttpProxy implements Forwarder {
  readonly servesAnyPath = true;
  #base: URL;
  #timeoutMs: number;
  #maxBodyBytes: number;

  constructor(upstream: string, options: HttpProxyOptions = {}) {
    const { timeoutMs = 300_000, maxBodyBytes = 1_048_576 } = options;
    this.#base = new URL(upstream);
    this.#timeoutMs = timeoutMs;
    this.#maxBodyBytes = maxBodyBytes;
  }

  async forward(request: Request, context: ForwardContext): Promise<Response> {
    const incoming = new URL(request.url);
    const target = new URL(this.#base);
    target.pathname = joinPath(this.#base.pathname, incoming.pathname);
    target.search = incoming.search;
    const headers = endToEndHeaders(request.headers, ["authorization", "host", "content-length"]);
    stripCookie(headers, ADMIN_COOKIE);
    headers.set("x-account-id", context.accountId);
    headers.set("x-plan", context.planName);
    headers.set("x-request-id", context.requestId);
    if (context.clientAddress !== undefined) {
      headers.append("x-forwarded-for", context.clientAddress);
    }
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = AbortSignal.any([context.signal, timeout]);
    const hasBody = request.body !== null && request.method !== "GET" && request.method !== "HEAD";
    let refused: HttpError | undefined;
    let response: Response;
    try {
      response = await fetch(target, {
        method: request.method,
        headers,
        body: hasBody && request.body !== null
          ? limitBody(request.body, this.#maxBodyBytes, {
            onRefused: (error) => {
              refused = error;
            },
          })
          : null,
        signal,
        redirect: "manual",
      });
    } catch (error) {
      // fetch reports the body stream's 413 as a plain error: use the original.
      throw refused ?? upstreamFailure(error, timeout, this.#timeoutMs);
    }
    // Deno's fetch stops applying `signal` to the body once its Response object
    // is unreachable (as it is once re-wrapped here), so bind the body to the
    // timeout explicitly: a stalled body still ends at `timeoutMs`. (A client
    // that goes away cancels this body, and so the upstream's.)
    const body = response.body?.pipeThrough(new TransformStream(), { signal: timeout }) ?? null;
    // fetch has already decoded gzip and br bodies: do not claim an encoding
    // (or a compressed length) the bytes no longer have.
    const decoded = FETCH_DECODES.has(
      (response.headers.get("content-encoding") ?? "").trim().toLowerCase(),
    );
    return new Response(body, {
      status: response.status,
      statusText: response.statusText,
      headers: endToEndHeaders(
        response.headers,
        decoded ? ["content-encoding", "content-length"] : [],
      ),
    });
  }
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

function upstreamFailure(error: unknown, timeout: AbortSignal, timeoutMs: number): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof Error && error.cause instanceof HttpError) return error.cause;
  if (timeout.aborted) {
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

function joinPath(basePath: string, path: string): string {
  return basePath.endsWith("/") ? basePath.slice(0, -1) + path : basePath + path;
}
