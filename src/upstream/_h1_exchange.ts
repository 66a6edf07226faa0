/**
 * One request/response exchange on one pooled socket, from the request head
 * written to the response body's end, and whether the socket may go back.
 */

import type { H1Connection } from "./_h1_connection.ts";
import {
  bodyDecoder,
  chunkFrame,
  concat,
  LAST_CHUNK,
  readFinalHead,
  requestHead,
  type ResponseHead,
} from "./_h1_framing.ts";
import type { H1Request, H1Response } from "./h1_pool.ts";

/** A request body past its byte limit. */
export class BodyTooLargeError extends Error {
  /** The limit that was passed. */
  readonly maxBytes: number;
  constructor(maxBytes: number) {
    super(`request body exceeds ${maxBytes} bytes`);
    this.name = "BodyTooLargeError";
    this.maxBytes = maxBytes;
  }
}

/** One request/response on one socket, from the head written to the body's end. */
export class Exchange {
  readonly #connection: H1Connection;
  readonly #request: H1Request;
  readonly #release: (reusable: boolean) => void;
  #released = false;
  #responded = false;
  #bodySent: boolean;
  #bodyReader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #output: ReadableStreamDefaultController<Uint8Array> | undefined;
  readonly #onAbort = () => this.#abort(this.#request.signal.reason);

  constructor(
    connection: H1Connection,
    request: H1Request,
    release: (reusable: boolean) => void,
  ) {
    this.#connection = connection;
    this.#request = request;
    this.#release = release;
    this.#bodySent = request.body === null;
  }

  /** Sends the request and resolves with the response head and a streaming body. */
  async run(host: string): Promise<H1Response> {
    const { signal } = this.#request;
    if (signal.aborted) {
      this.#settle(false);
      throw signal.reason;
    }
    signal.addEventListener("abort", this.#onAbort, { once: true });
    try {
      await this.#send(host);
      const head = await readFinalHead(this.#connection);
      return this.#respond(head);
    } catch (error) {
      this.#settle(false);
      throw this.#connection.failure ?? error;
    }
  }

  async #send(host: string): Promise<void> {
    const { body, bodyLength } = this.#request;
    const encodedHead = requestHead(this.#request, host);
    if (body === null) {
      await this.#connection.write(encodedHead);
      return;
    }
    this.#bodyReader = body.getReader();
    // Full duplex: the body streams while the response is awaited.
    this.#pump(this.#bodyReader, encodedHead, bodyLength).then(
      () => this.#bodySent = true,
      (error) => this.#abort(error),
    );
  }

  /** Writes the head and body; a known-length body's first chunk shares the head's write. */
  async #pump(
    reader: ReadableStreamDefaultReader<Uint8Array>,
    head: Uint8Array,
    bodyLength: number | undefined,
  ): Promise<void> {
    const { maxBodyBytes = Infinity } = this.#request;
    const connection = this.#connection;
    let sentBytes = 0;
    let pendingHead: Uint8Array | undefined = head;
    if (bodyLength === undefined) {
      await connection.write(head);
      pendingHead = undefined;
    }
    for (;;) {
      const chunk = await reader.read();
      if (chunk.done) break;
      sentBytes += chunk.value.byteLength;
      if (sentBytes > maxBodyBytes) throw new BodyTooLargeError(maxBodyBytes);
      if (bodyLength !== undefined && sentBytes > bodyLength) {
        throw new Error("request body longer than its Content-Length");
      }
      if (chunk.value.byteLength === 0) continue;
      const frame = bodyLength === undefined ? chunkFrame(chunk.value) : chunk.value;
      await connection.write(pendingHead === undefined ? frame : concat(pendingHead, frame));
      pendingHead = undefined;
    }
    if (bodyLength !== undefined && sentBytes !== bodyLength) {
      throw new Error("request body shorter than its Content-Length");
    }
    if (pendingHead !== undefined) await connection.write(pendingHead);
    if (bodyLength === undefined) await connection.write(LAST_CHUNK);
  }

  #respond(head: ResponseHead): H1Response {
    const { status, statusText, headers } = head;
    this.#responded = true;
    const noBody = this.#request.method === "HEAD" || status === 204 || status === 304;
    if (noBody) {
      // No body whatever the framing headers say: only the upstream's intent matters.
      this.#settle(head.persistent);
      return { status, statusText, headers, body: null };
    }
    const decoder = bodyDecoder(this.#connection, head);
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#output = controller;
      },
      pull: async (controller) => {
        try {
          const chunk = await decoder.next();
          if (this.#released) return;
          if (chunk === null) {
            this.#settle(head.keepAlive && decoder.reusable);
            controller.close();
          } else {
            controller.enqueue(chunk);
          }
        } catch (error) {
          if (this.#released) return;
          this.#settle(false);
          controller.error(this.#connection.failure ?? error);
        }
      },
      cancel: () => this.#settle(false),
    }, { highWaterMark: 0 });
    return { status, statusText, headers, body };
  }

  /** Tears the exchange down: the socket closes, both bodies stop. */
  #abort(reason: unknown): void {
    this.#connection.destroy(reason);
    this.#bodyReader?.cancel(reason).catch(() => {});
    if (this.#output !== undefined && !this.#released) {
      this.#output.error(reason);
      this.#settle(false);
    }
  }

  /** Ends the exchange once: the socket goes back (or closes) and the caller hears of it. */
  #settle(reusable: boolean): void {
    if (this.#released) return;
    this.#released = true;
    this.#request.signal.removeEventListener("abort", this.#onAbort);
    const clean = reusable && this.#bodySent && this.#connection.drained;
    if (!clean) this.#bodyReader?.cancel().catch(() => {});
    this.#release(clean);
    // Before a response the caller hears of the end from the rejection (and may retry).
    if (this.#responded) this.#request.onSettled?.();
  }
}
