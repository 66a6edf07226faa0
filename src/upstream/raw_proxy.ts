/**
 * @module
 * Forwarding to a real upstream over the pooled HTTP/1.1 client of
 * `h1_pool.ts` (raw `Deno.connect` sockets), with the same contract as
 * {@linkcode HttpProxy}: the header rules of `forward_headers.ts`, both bodies
 * streamed with back-pressure and passed as they are (no decoding), the whole
 * exchange bounded by `timeoutMs` with one timer cleared when it ends, torn
 * down (and its socket closed) when the client goes away; unreachable → 502,
 * too slow → 504, a chunked body over `maxBodyBytes` → 413. An `https:`
 * upstream is handed to {@linkcode HttpProxy}.
 */

import { payloadTooLarge } from "./body_limit.ts";
import {
  type HttpProxyOptions,
  isEndToEnd,
  upstreamFailure,
  upstreamRequestHeaders,
  upstreamUrl,
} from "./forward_headers.ts";
import { Deadline } from "./deadline.ts";
import type { ForwardContext, Forwarder } from "./forwarder.ts";
import { BodyTooLargeError, H1Pool, type H1Response } from "./h1_pool.ts";
import { HttpProxy } from "./proxy.ts";

/** Options of {@linkcode RawProxy}. */
export interface RawProxyOptions extends HttpProxyOptions {
  /** Most sockets open to the upstream at once; more requests wait their turn. */
  maxConnections?: number;
  /** An idle pooled socket is closed after this long unused. */
  idleMs?: number;
}

/** Forwards to one `http:` upstream base URL over a pool of raw HTTP/1.1 sockets. */
export class RawProxy implements Forwarder {
  readonly servesAnyPath = true;
  readonly #base: URL;
  readonly #timeoutMs: number;
  readonly #maxBodyBytes: number;
  readonly #pool: H1Pool | undefined;
  readonly #fallback: HttpProxy | undefined;

  constructor(upstream: string, options: RawProxyOptions = {}) {
    const { timeoutMs = 300_000, maxBodyBytes = 1_048_576, maxConnections = 1024, idleMs } =
      options;
    this.#base = new URL(upstream);
    this.#timeoutMs = timeoutMs;
    this.#maxBodyBytes = maxBodyBytes;
    if (this.#base.protocol === "http:") {
      const hostname = this.#base.hostname.replace(/^\[(.*)\]$/, "$1");
      const port = Number(this.#base.port || "80");
      this.#pool = new H1Pool(
        { hostname, port, host: this.#base.host },
        idleMs === undefined ? { maxConnections } : { maxConnections, idleMs },
      );
    } else {
      this.#fallback = new HttpProxy(upstream, { timeoutMs, maxBodyBytes });
    }
  }

  /** Closes pooled connections (for tests and shutdown). */
  close(): void {
    this.#pool?.close();
    this.#fallback?.close();
  }

  async forward(request: Request, context: ForwardContext): Promise<Response> {
    if (this.#pool === undefined) {
      if (this.#fallback === undefined) throw new Error("RawProxy has no client");
      return await this.#fallback.forward(request, context);
    }
    const target = upstreamUrl(this.#base, request.url);
    const body = request.method === "GET" || request.method === "HEAD" ? null : request.body;
    const headers = upstreamRequestHeaders(request, context, false);
    const declared = headers.get("content-length");
    const bodyLength = body !== null && declared !== null && /^[0-9]{1,15}$/.test(declared)
      ? Number(declared)
      : undefined;
    const deadline = new Deadline(this.#timeoutMs, context.signal);
    let upstream: H1Response;
    try {
      upstream = await this.#pool.request({
        method: request.method,
        path: target.pathname + target.search,
        headers,
        body,
        bodyLength,
        maxBodyBytes: this.#maxBodyBytes,
        signal: deadline.signal,
        onSettled: () => deadline.end(),
      });
    } catch (error) {
      deadline.end();
      if (error instanceof BodyTooLargeError) throw payloadTooLarge(this.#maxBodyBytes);
      throw upstreamFailure(error, deadline.timedOut, this.#timeoutMs);
    }
    try {
      return new Response(upstream.body, {
        status: upstream.status,
        statusText: upstream.statusText,
        headers: passedHeaders(upstream.headers),
      });
    } catch (error) {
      // A status or header the web API refuses: the upstream answered badly.
      await upstream.body?.cancel();
      deadline.end();
      throw upstreamFailure(error, false, this.#timeoutMs);
    }
  }
}

/** The upstream's response headers that pass back to the client. */
function passedHeaders(fields: readonly [string, string][]): Headers {
  const connectionNamed: string[] = [];
  for (const [name, value] of fields) {
    if (name.toLowerCase() !== "connection") continue;
    for (const token of value.toLowerCase().split(",")) connectionNamed.push(token.trim());
  }
  const passed = new Headers();
  for (const [name, value] of fields) {
    const lower = name.toLowerCase();
    if (isEndToEnd(lower, connectionNamed)) passed.append(lower, value);
  }
  return passed;
}
