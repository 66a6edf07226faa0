/**
 * @module
 * Bodies over `--max-body` are refused with 413: at once when
 * `Content-Length` says so, and mid-stream for chunked bodies, whose bytes are
 * counted as they pass.
 */

import { HttpError } from "../http/errors.ts";

/** The 413 error for a body over `maxBytes`. */
export function payloadTooLarge(maxBytes: number): HttpError {
  return new HttpError(413, "PAYLOAD_TOO_LARGE", `request body exceeds ${maxBytes} bytes`, {
    details: { maxBytes },
  });
}

/** Options for {@linkcode limitBody}. */
export interface LimitBodyOptions {
  /**
   * Called with the 413 error when the body goes over the limit. A consumer
   * such as `fetch` may report the stream's error as a plain copy, so this is
   * how the caller learns that the failure was a 413.
   */
  onRefused?: (error: HttpError) => void;
}

/**
 * Returns `body` as a stream that errors with a 413 {@linkcode HttpError}
 * once more than `maxBytes` have passed.
 */
export function limitBody(
  body: ReadableStream<Uint8Array>,
  maxBytes: number,
  options: LimitBodyOptions = {},
): ReadableStream<Uint8Array> {
  const { onRefused } = options;
  let seen = 0;
  return body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        seen += chunk.byteLength;
        if (seen > maxBytes) {
          const error = payloadTooLarge(maxBytes);
          onRefused?.(error);
          controller.error(error);
        } else {
          controller.enqueue(chunk);
        }
      },
    }),
  );
}

/** Reads a whole body, refusing more than `maxBytes`. */
export async function readLimited(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
): Promise<Uint8Array> {
  if (body === null) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > maxBytes) {
      throw payloadTooLarge(maxBytes);
    }
    chunks.push(chunk);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}
