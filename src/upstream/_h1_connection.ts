/**
 * One pooled HTTP/1.1 socket: a read buffer for heads and chunk lines, whole
 * writes, and the idle state (a pending read that notices the upstream closing
 * it) that decides whether it can be reused.
 */

import { MAX_HEAD_BYTES, UpstreamProtocolError } from "./_h1_framing.ts";

/** A socket with a read buffer for heads and chunk lines. */
export class H1Connection {
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

/** Bytes as a string of the same code units. */
function decodeLatin1(bytes: Uint8Array): string {
  let text = "";
  for (let at = 0; at < bytes.length; at += 4096) {
    text += String.fromCharCode(...bytes.subarray(at, at + 4096));
  }
  return text;
}
