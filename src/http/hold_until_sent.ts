/**
 * @module
 * Ties a concurrency lease to a response body. The slot is held until the
 * last byte has been handed to the connection, and given back exactly once
 * when the body ends, fails, or is cancelled because the client went away.
 * (In Deno `request.signal` also fires after a normal completion, so the
 * body stream, not the signal, is what tells "sent" from "aborted".)
 */

import type { Lease } from "../limits/lease.ts";

/** Returns `response` with a body that releases `lease` when it is done. */
export function holdUntilSent(response: Response, lease: Lease): Response {
  const source = response.body;
  if (source === null) {
    lease.release("done");
    return response;
  }
  const reader = source.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (error) {
        lease.release("error");
        controller.error(error);
        return;
      }
      if (chunk.done) {
        lease.release("done");
        controller.close();
      } else {
        controller.enqueue(chunk.value);
      }
    },
    async cancel(reason) {
      lease.release("aborted");
      await reader.cancel(reason).catch(() => {});
    },
  }, { highWaterMark: 0 });
  return new Response(body, {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
}
