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

import { H1Connection } from "./_h1_connection.ts";
import { Exchange } from "./_h1_exchange.ts";
import { UpstreamProtocolError } from "./_h1_framing.ts";

export { BodyTooLargeError } from "./_h1_exchange.ts";
export { MAX_HEAD_BYTES, UpstreamProtocolError } from "./_h1_framing.ts";

const IDEMPOTENT = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

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
