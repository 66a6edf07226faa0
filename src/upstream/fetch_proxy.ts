/**
 * @module
 * Forwarding with Deno's `fetch` (kept as the baseline the faster
 * `node:http` client in `proxy.ts` is measured against; see
 * `bench/forward_bench.ts`). Method, path, query, body and headers pass
 * through unchanged except `Authorization`, `Host` and the hop-by-hop
 * headers; the gateway adds `X-Account-Id`, `X-Plan`, `X-Request-ID` and
 * `X-Forwarded-For`. Both bodies stream. The whole exchange is bounded by
 * `timeoutMs` and cancelled when the client goes away: an unreachable
 * upstream is a 502, a slow one a 504.
 */

import type { HttpError } from "../http/errors.ts";
import { limitBody } from "./body_limit.ts";
import { Deadline } from "./deadline.ts";
import {
  endToEndHeaders,
  type HttpProxyOptions,
  upstreamFailure,
  upstreamRequestHeaders,
  upstreamUrl,
} from "./forward_headers.ts";
import type { ForwardContext, Forwarder } from "./forwarder.ts";

/** Content codings Deno's `fetch` decodes transparently (it asks for `gzip,br`). */
const FETCH_DECODES = new Set(["gzip", "br"]);

/** Forwards to one upstream base URL with `fetch`. */
export class FetchProxy implements Forwarder {
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

  /** Nothing to close: `fetch` keeps its own pool. */
  close(): void {}

  async forward(request: Request, context: ForwardContext): Promise<Response> {
    const target = upstreamUrl(this.#base, request.url);
    const headers = upstreamRequestHeaders(request, context, true);
    // One timer per exchange, cleared when it ends: AbortSignal.timeout() would
    // leave every request's timer pending for the whole timeout.
    const exchange = new Deadline(this.#timeoutMs, context.signal);
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
        signal: exchange.signal,
        redirect: "manual",
      });
    } catch (error) {
      exchange.end();
      // fetch reports the body stream's 413 as a plain error: use the original.
      throw refused ?? upstreamFailure(error, exchange.timedOut, this.#timeoutMs);
    }
    // fetch has already decoded gzip and br bodies: do not claim an encoding
    // (or a compressed length) the bytes no longer have.
    const decoded = FETCH_DECODES.has(
      (response.headers.get("content-encoding") ?? "").trim().toLowerCase(),
    );
    return new Response(bindToDeadline(response.body, exchange), {
      status: response.status,
      statusText: response.statusText,
      headers: endToEndHeaders(
        response.headers,
        decoded ? ["content-encoding", "content-length"] : [],
      ),
    });
  }
}

/**
 * The upstream body, ended at the deadline. (Deno's fetch stops applying its
 * signal to a body whose Response object is gone, as it is once re-wrapped
 * here, so the deadline errors the stream itself.)
 */
function bindToDeadline(
  source: ReadableStream<Uint8Array> | null,
  deadline: Deadline,
): ReadableStream<Uint8Array> | null {
  if (source === null) {
    deadline.end();
    return null;
  }
  const reader = source.getReader();
  let output: ReadableStreamDefaultController<Uint8Array> | undefined;
  deadline.onTimeout(() => {
    reader.cancel().catch(() => {});
    output?.error(new DOMException("upstream timed out", "TimeoutError"));
  });
  return new ReadableStream<Uint8Array>({
    start(controller) {
      output = controller;
    },
    async pull(controller) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (error) {
        deadline.end();
        if (!deadline.timedOut) controller.error(error);
        return;
      }
      if (chunk.done) {
        deadline.end();
        controller.close();
      } else {
        controller.enqueue(chunk.value);
      }
    },
    async cancel(reason) {
      deadline.end();
      await reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
}
