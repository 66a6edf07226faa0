/**
 * @module
 * A pooled HTTP/1.1 client over `Deno.connect`, for plain `http:` upstreams.
 *
 * How it works: {@linkcode H1Pool} keeps up to `maxConnections` sockets to one
 * origin. A request takes the most recently used idle socket, else opens one,
 * else waits in a FIFO until a socket comes back (bounded by the request's
 * signal). The request head goes out in one write; a body is streamed with
 * `Content-Length` when it is known, else chunked. The response head is
 * parsed from a buffer capped at 64 KiB, 1xx answers are skipped, and the body
 * is decoded by its framing (none, length, chunked, or until close) into a
 * pull stream that reads the socket only when its consumer asks: back-pressure
 * reaches the upstream. A socket goes back to the pool only when both messages
 * ended exactly at their boundaries and the upstream allows keep-alive; any
 * failure, abort or cancel closes it. An idle socket keeps one read pending, so
 * an upstream that closes it (or sends stray bytes) is noticed at once, and
 * idle sockets are closed after `idleMs`. A reused socket that fails before any
 * response byte is retried once on a fresh one for a bodiless idempotent request.
 */

/** The largest response head (and chunk-size line, and trailer section) accepted. */
export const MAX_HEAD_BYTES = 64 * 1024;
const READ_BYTES = 64 * 1024;
const MAX_INFORMATIONAL = 32;
const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);
const OWN_HEADERS = new Set(["host", "content-length", "transfer-encoding", "connection"]);
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([0-9]{3})(?: (.*))?$/;
const NON_ASCII = /[\u0080-\uffff]/;
const encoder = new TextEncoder();

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

/** A response that breaks HTTP/1.1 framing (or a limit on it). */
export class UpstreamProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UpstreamProtocolError";
  }
}

/** Options of {@linkcode H1Pool}. */
export interface H1PoolOptions {
  /** Most sockets open at once (idle or busy); more requests wait in a FIFO. */
  maxConnections?: number;
  /** An idle socket is closed after this long unused. */
  idleMs?: number;
}

/** One request through {@linkcode H1Pool.request}. */
export interface H1Request {
  method: string;
  /** Path and query, as sent on the request line. */
  path: string;
  /** End-to-end headers; `host`, `connection` and the framing headers are the pool's own. */
  headers: Iterable<[string, string]>;
  body: ReadableStream<Uint8Array> | null;
  /** The body's length when known (sent as `Content-Length`); otherwise it is sent chunked. */
  bodyLength?: number | undefined;
  /** Largest body sent; past it the exchange fails with {@linkcode BodyTooLargeError}. */
  maxBodyBytes?: number;
  /** Aborting it tears the exchange down at any point, the socket is closed. */
  signal: AbortSignal;
  /** Called once when the response body has ended, failed or been cancelled. */
  onSettled?: () => void;
}

/** What {@linkcode H1Pool.request} resolves to. */
export interface H1Response {
  status: number;
  statusText: string;
  /** Header fields as received (names as sent), in order. */
  headers: [string, string][];
  /** Null for HEAD, 204 and 304; otherwise the bytes as framed, undecoded. */
  body: ReadableStream<Uint8Array> | null;
}

/** Pooled keep-alive HTTP/1.1 connections to one `host:port`. */
export class H1Pool {
  readonly #hostname: string;
  readonly #port: number;
  readonly #hostHeader: string;
  readonly #maxConnections: number;
  readonly #idleMs: number;
  /** Idle sockets, least recently used first. */
  readonly #idle: H1Connection[] = [];
  readonly #live = new Set<H1Connection>();
  readonly #waiters: Waiter[] = [];
  #open = 0;
  #sweepTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  constructor(
    origin: { hostname: string; port: number; host: string },
    options: H1PoolOptions = {},
  ) {
    const { maxConnections = 256, idleMs = 30_000 } = options;
    this.#hostname = origin.hostname;
    this.#port = origin.port;
    this.#hostHeader = origin.host;
    this.#maxConnections = maxConnections;
    this.#idleMs = idleMs;
  }

  /** Sockets open now (idle and busy), for tests and metrics. */
  get openCount(): number {
    return this.#open;
  }

  /** Idle sockets now, for tests and metrics. */
  get idleCount(): number {
    return this.#idle.length;
  }

  /** Closes every socket and refuses waiting and later requests. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Closes every socket and refuses waiting and later requests. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#sweepTimer);
    this.#sweepTimer = undefined;
    this.#idle.length = 0;
    for (const connection of this.#live) connection.destroy(new Error("pool closed"));
    this.#live.clear();
    this.#open = 0;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(new Error("pool closed"));
  }

  /** Sends `request` and resolves with the response head and a streaming body. */
  async request(request: H1Request): Promise<H1Response> {
    const retryable = request.body === null && IDEMPOTENT.has(request.method);
    for (let attempt = 0;; attempt++) {
      const lease = await this.#acquire(request.signal);
      try {
        return await this.#exchange(lease.connection, request);
      } catch (error) {
        const stale = lease.reused && lease.connection.receivedBytes === 0 &&
          !(error instanceof UpstreamProtocolError);
        if (attempt === 0 && retryable && stale && !request.signal.aborted) continue;
        throw error;
      }
    }
  }

  async #acquire(signal: AbortSignal): Promise<Lease> {
    signal.throwIfAborted();
    if (this.#closed) throw new Error("pool closed");
    const idle = this.#idle.pop();
    if (idle !== undefined) {
      idle.wake();
      return { connection: idle, reused: true };
    }
    if (this.#open < this.#maxConnections) {
      this.#open++;
      return { connection: await this.#connect(signal), reused: false };
    }
    const granted = await new Promise<H1Connection | undefined>((resolve, reject) => {
      const waiter: Waiter = {
        grant: (connection) => {
          signal.removeEventListener("abort", onAbort);
          resolve(connection);
        },
        reject: (error) => {
          signal.removeEventListener("abort", onAbort);
          reject(error);
        },
      };
      const onAbort = () => {
        const at = this.#waiters.indexOf(waiter);
        if (at >= 0) this.#waiters.splice(at, 1);
        reject(signal.reason);
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.#waiters.push(waiter);
    });
    if (granted === undefined) return { connection: await this.#connect(signal), reused: false };
    if (signal.aborted) {
      // Aborted as the socket was handed over: pass it on rather than waste it.
      this.#release(granted, true);
      throw signal.reason;
    }
    granted.wake();
    return { connection: granted, reused: true };
  }

  /** Opens a socket for a slot already counted in `#open`. */
  async #connect(signal: AbortSignal): Promise<H1Connection> {
    if (signal.aborted) {
      this.#open--;
      this.#wakeWaiter();
      throw signal.reason;
    }
    const connecting = Deno.connect({ hostname: this.#hostname, port: this.#port });
    const aborted = Promise.withResolvers<never>();
    const onAbort = () => aborted.reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const conn = await Promise.race([connecting, aborted.promise]).catch((error) => {
        // A connect that loses the race to an abort still settles: close what it brings.
        connecting.then((late) => late.close(), () => {});
        throw error;
      });
      if (this.#closed) {
        conn.close();
        throw new Error("pool closed");
      }
      const connection = new H1Connection(conn);
      this.#live.add(connection);
      return connection;
    } catch (error) {
      if (!this.#closed) {
        this.#open--;
        this.#wakeWaiter();
      }
      throw error;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  #exchange(connection: H1Connection, request: H1Request): Promise<H1Response> {
    const exchange = new Exchange(connection, request, (reusable) => {
      this.#release(connection, reusable);
    });
    return exchange.run(this.#hostHeader);
  }

  /** Hands a socket to the next waiter, parks it, or closes it. */
  #release(connection: H1Connection, reusable: boolean): void {
    if (this.#closed) {
      connection.destroy();
      return;
    }
    if (reusable && !connection.closed) {
      const waiter = this.#waiters.shift();
      if (waiter !== undefined) {
        waiter.grant(connection);
        return;
      }
      connection.sleep(() => this.#dropIdle(connection));
      this.#idle.push(connection);
      this.#scheduleSweep(this.#idleMs);
      return;
    }
    connection.destroy();
    this.#forget(connection);
  }

  #forget(connection: H1Connection): void {
    if (!this.#live.delete(connection)) return;
    this.#open--;
    this.#wakeWaiter();
  }

  /** A waiter may open a socket now that a slot is free. */
  #wakeWaiter(): void {
    if (this.#open >= this.#maxConnections) return;
    const waiter = this.#waiters.shift();
    if (waiter === undefined) return;
    this.#open++;
    waiter.grant(undefined);
  }

  /** An idle socket the upstream closed (or wrote to) is useless: drop it. */
  #dropIdle(connection: H1Connection): void {
    const at = this.#idle.indexOf(connection);
    if (at >= 0) this.#idle.splice(at, 1);
    connection.destroy();
    this.#forget(connection);
  }

  #scheduleSweep(delayMs: number): void {
    if (this.#sweepTimer !== undefined) return;
    this.#sweepTimer = setTimeout(() => {
      this.#sweepTimer = undefined;
      this.#sweep();
    }, delayMs);
    Deno.unrefTimer(this.#sweepTimer);
  }

  /** Closes sockets idle for `idleMs`; the oldest are first in `#idle`. */
  #sweep(): void {
    const nowMs = performance.now();
    for (let oldest = this.#idle[0]; oldest !== undefined; oldest = this.#idle[0]) {
      const leftMs = oldest.idleSinceMs + this.#idleMs - nowMs;
      if (leftMs > 0) {
        this.#scheduleSweep(leftMs);
        return;
      }
      this.#dropIdle(oldest);
    }
  }
}

interface Lease {
  connection: H1Connection;
  reused: boolean;
}

/** A request waiting for a socket: granted one, or (undefined) a slot to open one. */
interface Waiter {
  grant(connection: H1Connection | undefined): void;
  reject(error: unknown): void;
}

/** One request/response on one socket, from the head written to the body's end. */
class Exchange {
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
    const { method, path, headers, body, bodyLength } = this.#request;
    let head = `${method} ${path} HTTP/1.1\r\nhost: ${host}\r\n`;
    for (const [name, value] of headers) {
      if (!OWN_HEADERS.has(name.toLowerCase())) head += `${name}: ${value}\r\n`;
    }
    if (body === null) {
      if (method === "POST" || method === "PUT" || method === "PATCH") {
        head += "content-length: 0\r\n";
      }
      await this.#connection.write(encodeLatin1(head + "\r\n"));
      return;
    }
    head += bodyLength === undefined
      ? "transfer-encoding: chunked\r\n\r\n"
      : `content-length: ${bodyLength}\r\n\r\n`;
    this.#bodyReader = body.getReader();
    const encodedHead = encodeLatin1(head);
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

const LAST_CHUNK = encoder.encode("0\r\n\r\n");

function chunkFrame(data: Uint8Array): Uint8Array {
  const size = encoder.encode(`${data.byteLength.toString(16)}\r\n`);
  const frame = new Uint8Array(size.byteLength + data.byteLength + 2);
  frame.set(size, 0);
  frame.set(data, size.byteLength);
  frame[frame.length - 2] = 13;
  frame[frame.length - 1] = 10;
  return frame;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a, 0);
  out.set(b, a.byteLength);
  return out;
}

/** Header text as bytes, one byte per code unit (header values are byte strings). */
function encodeLatin1(text: string): Uint8Array {
  if (!NON_ASCII.test(text)) return encoder.encode(text);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

/** Bytes as a string of the same code units. */
function decodeLatin1(bytes: Uint8Array): string {
  let text = "";
  for (let at = 0; at < bytes.length; at += 4096) {
    text += String.fromCharCode(...bytes.subarray(at, at + 4096));
  }
  return text;
}

/** A parsed response head and how its body is framed. */
interface ResponseHead {
  status: number;
  statusText: string;
  headers: [string, string][];
  /** Whether the upstream keeps the socket open after this response (HTTP/1.1, no `close`). */
  persistent: boolean;
  /** Whether the socket is reusable after a body read by `framing`. */
  keepAlive: boolean;
  framing: { kind: "length"; lengthBytes: number } | { kind: "chunked" } | { kind: "close" };
}

/** The first non-1xx head (100 Continue, 103 Early Hints are skipped). */
async function readFinalHead(connection: H1Connection): Promise<ResponseHead> {
  for (let informational = 0; informational <= MAX_INFORMATIONAL; informational++) {
    const head = parseHead(await connection.readHead());
    if (head.status === 101) throw new UpstreamProtocolError("unexpected 101 Switching Protocols");
    if (head.status >= 200) return head;
  }
  throw new UpstreamProtocolError("too many informational responses");
}

function parseHead(text: string): ResponseHead {
  const lines = text.split("\n").map((line) => line.endsWith("\r") ? line.slice(0, -1) : line);
  const match = STATUS_LINE.exec(lines[0] ?? "");
  if (match === null) throw new UpstreamProtocolError("malformed status line");
  const headers: [string, string][] = [];
  for (const line of lines.slice(1)) {
    if (line === "") break;
    const last = headers[headers.length - 1];
    if (line.startsWith(" ") || line.startsWith("\t")) {
      // obs-fold: a continuation of the previous field, joined with a space.
      if (last === undefined) throw new UpstreamProtocolError("folded line without a field");
      last[1] = `${last[1]} ${trimWhitespace(line)}`;
      continue;
    }
    const colon = line.indexOf(":");
    const name = line.slice(0, colon);
    if (colon <= 0 || !TOKEN.test(name)) throw new UpstreamProtocolError("malformed header line");
    headers.push([name, trimWhitespace(line.slice(colon + 1))]);
  }
  return {
    status: Number(match[2]),
    statusText: match[3] ?? "",
    headers,
    ...framingOf(match[1] === "1", headers),
  };
}

function framingOf(
  http11: boolean,
  headers: readonly [string, string][],
): Pick<ResponseHead, "persistent" | "keepAlive" | "framing"> {
  const codings: string[] = [];
  const lengths: string[] = [];
  let close = !http11;
  for (const [name, value] of headers) {
    const lower = name.toLowerCase();
    if (lower === "transfer-encoding") codings.push(...tokens(value));
    else if (lower === "content-length") lengths.push(...value.split(",").map(trimWhitespace));
    else if (lower === "connection" && tokens(value).includes("close")) close = true;
  }
  if (codings.length > 0) {
    // Transfer-Encoding wins over Content-Length; a message with both is suspect: no reuse.
    const chunked = codings[codings.length - 1] === "chunked";
    return {
      persistent: !close,
      keepAlive: !close && chunked && lengths.length === 0,
      framing: chunked ? { kind: "chunked" } : { kind: "close" },
    };
  }
  if (lengths.length === 0) {
    return { persistent: !close, keepAlive: false, framing: { kind: "close" } };
  }
  const first = lengths[0] ?? "";
  if (!/^[0-9]{1,15}$/.test(first) || lengths.some((length) => length !== first)) {
    throw new UpstreamProtocolError("invalid Content-Length");
  }
  return {
    persistent: !close,
    keepAlive: !close,
    framing: { kind: "length", lengthBytes: Number(first) },
  };
}

function tokens(value: string): string[] {
  return value.toLowerCase().split(",").map(trimWhitespace).filter((token) => token !== "");
}

function trimWhitespace(text: string): string {
  return text.replace(/^[ \t]+|[ \t]+$/g, "");
}

/** Reads one body by its framing. */
interface BodyDecoder {
  /** The next bytes, or null at the end of the body. */
  next(): Promise<Uint8Array | null>;
  /** Whether the socket is at a message boundary after the end. */
  readonly reusable: boolean;
}

function bodyDecoder(connection: H1Connection, head: ResponseHead): BodyDecoder {
  const { framing } = head;
  if (framing.kind === "length") return lengthDecoder(connection, framing.lengthBytes);
  if (framing.kind === "chunked") return chunkedDecoder(connection);
  return {
    reusable: false,
    next: () => connection.readSome(READ_BYTES),
  };
}

function lengthDecoder(connection: H1Connection, lengthBytes: number): BodyDecoder {
  let remaining = lengthBytes;
  return {
    reusable: true,
    async next() {
      if (remaining === 0) return null;
      const chunk = await connection.readSome(Math.min(remaining, READ_BYTES));
      if (chunk === null) throw new Error("upstream closed the connection mid-body");
      remaining -= chunk.byteLength;
      return chunk;
    },
  };
}

function chunkedDecoder(connection: H1Connection): BodyDecoder {
  let remaining = 0;
  let state: "size" | "data" | "done" = "size";
  return {
    reusable: true,
    async next() {
      for (;;) {
        if (state === "done") return null;
        if (state === "data" && remaining > 0) {
          const chunk = await connection.readSome(Math.min(remaining, READ_BYTES));
          if (chunk === null) throw new Error("upstream closed the connection mid-body");
          remaining -= chunk.byteLength;
          return chunk;
        }
        if (state === "data") {
          if (await connection.readLine(MAX_HEAD_BYTES) !== "") {
            throw new UpstreamProtocolError("chunk data not followed by CRLF");
          }
          state = "size";
        }
        remaining = parseChunkSize(await connection.readLine(MAX_HEAD_BYTES));
        state = "data";
        if (remaining === 0) {
          await skipTrailers(connection);
          state = "done";
        }
      }
    },
  };
}

/** The size of a chunk-size line, its extensions ignored. */
function parseChunkSize(line: string): number {
  const semicolon = line.indexOf(";");
  const hex = trimWhitespace(semicolon < 0 ? line : line.slice(0, semicolon));
  if (!/^[0-9a-fA-F]{1,13}$/.test(hex)) throw new UpstreamProtocolError("malformed chunk size");
  return parseInt(hex, 16);
}

/** Reads past the trailer section (trailers are not passed on). */
async function skipTrailers(connection: H1Connection): Promise<void> {
  let seenBytes = 0;
  for (;;) {
    const line = await connection.readLine(MAX_HEAD_BYTES - seenBytes);
    if (line === "") return;
    seenBytes += line.length + 2;
  }
}

/** A socket with a read buffer for heads and chunk lines. */
class H1Connection {
  readonly #conn: Deno.TcpConn;
  #buffer = new Uint8Array(16 * 1024);
  #start = 0;
  #end = 0;
  /** A read started while idle, handed to the next reader. */
  #pending: Promise<number | null> | undefined;
  #failure: unknown;
  #closed = false;
  #idle = false;
  /** Bytes received since this socket was last taken from the pool. */
  receivedBytes = 0;
  idleSinceMs = 0;

  constructor(conn: Deno.TcpConn) {
    this.#conn = conn;
    conn.setNoDelay(true);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Why the socket was torn down, if it was with a reason. */
  get failure(): unknown {
    return this.#failure;
  }

  /** Whether no unread bytes are buffered. */
  get drained(): boolean {
    return this.#start === this.#end;
  }

  destroy(reason?: unknown): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#failure ??= reason;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the runtime.
    }
  }

  /** Parks the socket: one read stays pending to notice the upstream closing it. */
  sleep(onStale: () => void): void {
    this.#idle = true;
    this.idleSinceMs = performance.now();
    this.#start = 0;
    this.#end = 0;
    const pending = this.#conn.read(this.#buffer);
    this.#pending = pending;
    const check = () => {
      if (this.#idle) onStale();
    };
    pending.then(check, check);
    this.#conn.unref();
  }

  /** Takes the socket from the pool for an exchange. */
  wake(): void {
    this.#idle = false;
    this.receivedBytes = 0;
    this.#conn.ref();
  }

  async write(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.byteLength) {
      if (this.#closed) throw this.#failure ?? new Error("connection closed");
      try {
        at += await this.#conn.write(bytes.subarray(at));
      } catch (error) {
        throw this.#failure ?? error;
      }
    }
  }

  /** A response head up to and including its blank line, as a string. */
  async readHead(): Promise<string> {
    let scanFrom = 0;
    for (;;) {
      const end = headEnd(this.#buffer, this.#start + scanFrom, this.#end);
      if (end >= 0) {
        const text = decodeLatin1(this.#buffer.subarray(this.#start, end));
        this.#start = end;
        return text;
      }
      const have = this.#end - this.#start;
      if (have > MAX_HEAD_BYTES) throw new UpstreamProtocolError("response head exceeds 64 KiB");
      scanFrom = Math.max(0, have - 3);
      if (!await this.#fill()) {
        throw new Error(
          have === 0
            ? "upstream closed the connection before a response"
            : "upstream closed the connection mid-head",
        );
      }
    }
  }

  /** One line without its line ending; at most `limitBytes` long. */
  async readLine(limitBytes: number): Promise<string> {
    let scanFrom = this.#start;
    for (;;) {
      const lf = this.#buffer.subarray(0, this.#end).indexOf(10, scanFrom);
      if (lf >= 0) {
        const stop = lf > this.#start && this.#buffer[lf - 1] === 13 ? lf - 1 : lf;
        const line = decodeLatin1(this.#buffer.subarray(this.#start, stop));
        this.#start = lf + 1;
        return line;
      }
      if (this.#end - this.#start > limitBytes) throw new UpstreamProtocolError("line too long");
      const scanned = this.#end - this.#start;
      if (!await this.#fill()) throw new Error("upstream closed the connection mid-body");
      scanFrom = this.#start + scanned;
    }
  }

  /** Up to `maxBytes`: buffered bytes first, else one read; null at end of stream. */
  async readSome(maxBytes: number): Promise<Uint8Array | null> {
    if (this.#end > this.#start) {
      const take = Math.min(maxBytes, this.#end - this.#start);
      const out = this.#buffer.slice(this.#start, this.#start + take);
      this.#start += take;
      return out;
    }
    const into = new Uint8Array(maxBytes);
    const n = await this.#read(into);
    if (n === null) return null;
    this.receivedBytes += n;
    return n * 4 < into.byteLength ? into.slice(0, n) : into.subarray(0, n);
  }

  /** Reads more into the buffer; false at end of stream. */
  async #fill(): Promise<boolean> {
    let reading = this.#pending;
    this.#pending = undefined;
    if (reading === undefined) {
      this.#makeRoom();
      reading = this.#read(this.#buffer.subarray(this.#end));
    }
    let n: number | null;
    try {
      n = await reading;
    } catch (error) {
      throw this.#failure ?? error;
    }
    if (n === null) return false;
    this.#end += n;
    this.receivedBytes += n;
    return true;
  }

  async #read(into: Uint8Array): Promise<number | null> {
    if (this.#closed) throw this.#failure ?? new Error("connection closed");
    try {
      return await this.#conn.read(into);
    } catch (error) {
      throw this.#failure ?? error;
    }
  }

  /** Compacts or grows the buffer so a read has room. */
  #makeRoom(): void {
    if (this.#start === this.#end) {
      this.#start = 0;
      this.#end = 0;
    }
    if (this.#end < this.#buffer.length) return;
    const have = this.#end - this.#start;
    if (have * 2 <= this.#buffer.length) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
    } else {
      const grown = new Uint8Array(this.#buffer.length * 2);
      grown.set(this.#buffer.subarray(this.#start, this.#end));
      this.#buffer = grown;
    }
    this.#start = 0;
    this.#end = have;
  }
}

/** The index just past the blank line ending a head in `buffer[from, to)`, or -1. */
function headEnd(buffer: Uint8Array, from: number, to: number): number {
  const view = buffer.subarray(0, to);
  for (let lf = view.indexOf(10, from); lf >= 0; lf = view.indexOf(10, lf + 1)) {
    if (view[lf + 1] === 10) return lf + 2;
    if (view[lf + 1] === 13 && view[lf + 2] === 10) return lf + 3;
  }
  return -1;
}
