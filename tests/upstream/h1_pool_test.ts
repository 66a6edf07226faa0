/**
 * The pooled HTTP/1.1 client against raw TCP servers written here with
 * `Deno.listen`, so every test controls the exact bytes on the wire: framing
 * both ways, keep-alive and its exceptions, broken and oversized responses,
 * back-pressure, aborts, the FIFO for sockets, idle expiry and the one retry.
 */

import assert from "node:assert/strict";
import {
  BodyTooLargeError,
  H1Pool,
  type H1PoolOptions,
  type H1Request,
  MAX_HEAD_BYTES,
  UpstreamProtocolError,
} from "../../src/upstream/h1_pool.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A request head as the server saw it. */
interface SeenHead {
  line: string;
  headers: Map<string, string>;
}

/** The server side of one connection: a buffered reader and a writer. */
class Peer {
  readonly conn: Deno.TcpConn;
  #buffer = new Uint8Array(0);

  constructor(conn: Deno.TcpConn) {
    this.conn = conn;
  }

  async #more(): Promise<boolean> {
    const into = new Uint8Array(65_536);
    const n = await this.conn.read(into).catch(() => null);
    if (n === null) return false;
    const grown = new Uint8Array(this.#buffer.length + n);
    grown.set(this.#buffer);
    grown.set(into.subarray(0, n), this.#buffer.length);
    this.#buffer = grown;
    return true;
  }

  async #until(marker: string): Promise<string | null> {
    for (;;) {
      const text = decoder.decode(this.#buffer);
      const at = text.indexOf(marker);
      if (at >= 0) {
        this.#buffer = this.#buffer.subarray(
          encoder.encode(text.slice(0, at + marker.length)).length,
        );
        return text.slice(0, at);
      }
      if (!await this.#more()) return null;
    }
  }

  async #take(size: number): Promise<Uint8Array> {
    while (this.#buffer.length < size) {
      if (!await this.#more()) throw new Error("client closed mid-body");
    }
    const out = this.#buffer.slice(0, size);
    this.#buffer = this.#buffer.subarray(size);
    return out;
  }

  /** The next request head, or null when the client closed first. */
  async head(): Promise<SeenHead | null> {
    const text = await this.#until("\r\n\r\n");
    if (text === null) return null;
    const [line = "", ...fields] = text.split("\r\n");
    const headers = new Map<string, string>();
    for (const field of fields) {
      const colon = field.indexOf(":");
      headers.set(field.slice(0, colon).toLowerCase(), field.slice(colon + 1).trim());
    }
    return { line, headers };
  }

  /** The request body by its framing (decoded when chunked). */
  async body(head: SeenHead): Promise<Uint8Array> {
    const length = head.headers.get("content-length");
    if (length !== undefined) return await this.#take(Number(length));
    if (head.headers.get("transfer-encoding") !== "chunked") return new Uint8Array();
    const parts: Uint8Array[] = [];
    for (;;) {
      const sizeLine = await this.#until("\r\n");
      if (sizeLine === null) throw new Error("client closed mid-chunk");
      const size = parseInt(sizeLine, 16);
      if (size === 0) {
        await this.#until("\r\n");
        return concat(parts);
      }
      parts.push(await this.#take(size));
      await this.#take(2);
    }
  }

  async write(data: string | Uint8Array): Promise<void> {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    for (let at = 0; at < bytes.length;) at += await this.conn.write(bytes.subarray(at));
  }

  /** Settles when the client closes the connection. */
  async closed(): Promise<void> {
    while (await this.#more()) {
      // discard
    }
  }
}

interface RawServer {
  port: number;
  /** Connections accepted so far. */
  readonly accepted: number;
  [Symbol.asyncDispose](): Promise<void>;
}

/** A TCP server on 127.0.0.1:0 running `serve` per connection (given its index). */
function rawServer(serve: (peer: Peer, index: number) => Promise<void>): RawServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const tasks: Promise<void>[] = [];
  let accepted = 0;
  const accepting = (async () => {
    for await (const conn of listener) {
      conns.add(conn);
      tasks.push(
        serve(new Peer(conn), accepted++).catch(() => {}).finally(() => {
          if (conns.delete(conn)) closeQuietly(conn);
        }),
      );
    }
  })().catch(() => {});
  return {
    port: listener.addr.port,
    get accepted() {
      return accepted;
    },
    [Symbol.asyncDispose]: async () => {
      listener.close();
      await accepting;
      for (const conn of conns) closeQuietly(conn);
      conns.clear();
      await Promise.all(tasks);
    },
  };
}

/** Closes `conn` unless a test already did. */
function closeQuietly(conn: Deno.TcpConn): void {
  try {
    conn.close();
  } catch {
    // closed by the test itself
  }
}

/** A keep-alive server answering every request with `respond(head, body, index)`. */
function keepAliveServer(
  respond: (head: SeenHead, body: Uint8Array, connection: number) => string | Uint8Array,
): RawServer {
  return rawServer(async (peer, index) => {
    for (let head = await peer.head(); head !== null; head = await peer.head()) {
      await peer.write(respond(head, await peer.body(head), index));
    }
  });
}

function poolFor(server: RawServer, options: H1PoolOptions = {}): H1Pool {
  return new H1Pool({ hostname: "127.0.0.1", port: server.port, host: "upstream.test" }, options);
}

function get(path: string, extra: Partial<H1Request> = {}): H1Request {
  return {
    method: "GET",
    path,
    headers: [],
    body: null,
    signal: new AbortController().signal,
    ...extra,
  };
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function text(body: ReadableStream<Uint8Array> | null): Promise<string> {
  return body === null ? "" : await new Response(body).text();
}

function ok(body: string, extra = ""): string {
  return `HTTP/1.1 200 OK\r\ncontent-length: ${encoder.encode(body).length}\r\n${extra}\r\n${body}`;
}

/** A body stream of `parts`, one per pull. */
function streamOf(parts: readonly string[]): ReadableStream<Uint8Array> {
  let next = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      const part = parts[next++];
      if (part === undefined) controller.close();
      else controller.enqueue(encoder.encode(part));
    },
  }, { highWaterMark: 0 });
}

Deno.test("H1Pool reuses one socket for sequential requests (keep-alive)", async () => {
  await using server = keepAliveServer((head) => ok(`you asked ${head.line.split(" ")[1]}`));
  using pool = poolFor(server);
  for (const path of ["/a", "/b", "/c"]) {
    const response = await pool.request(get(path));
    assert.equal(response.status, 200);
    assert.equal(response.statusText, "OK");
    assert.equal(await text(response.body), `you asked ${path}`);
  }
  assert.equal(server.accepted, 1, "one connection served all three");
  assert.equal(pool.openCount, 1);
  assert.equal(pool.idleCount, 1);
});

Deno.test("H1Pool sends host, the given headers and no framing for a bodiless GET", async () => {
  const seen: SeenHead[] = [];
  await using server = keepAliveServer((head) => {
    seen.push(head);
    return ok("");
  });
  using pool = poolFor(server);
  const response = await pool.request(
    get("/p?q=1", { headers: [["x-one", "1"], ["Host", "evil"]] }),
  );
  await text(response.body);
  assert.equal(seen[0]?.line, "GET /p?q=1 HTTP/1.1");
  assert.equal(seen[0]?.headers.get("host"), "upstream.test");
  assert.equal(seen[0]?.headers.get("x-one"), "1");
  assert.equal(seen[0]?.headers.has("content-length"), false);
  assert.equal(seen[0]?.headers.has("transfer-encoding"), false);
});

Deno.test("H1Pool sends a known-length body with Content-Length and the socket stays reusable", async () => {
  const seen: { head: SeenHead; body: string }[] = [];
  await using server = keepAliveServer((head, body) => {
    seen.push({ head, body: decoder.decode(body) });
    return ok("got it");
  });
  using pool = poolFor(server);
  for (const payload of ["first body", "second"]) {
    const response = await pool.request({
      ...get("/"),
      method: "POST",
      body: streamOf([payload.slice(0, 3), payload.slice(3)]),
      bodyLength: payload.length,
    });
    assert.equal(await text(response.body), "got it");
  }
  assert.deepEqual(seen.map((s) => s.body), ["first body", "second"]);
  assert.equal(seen[0]?.head.headers.get("content-length"), "10");
  assert.equal(seen[0]?.head.headers.has("transfer-encoding"), false);
  assert.equal(server.accepted, 1);
});

Deno.test("H1Pool sends an unknown-length body chunked, empty chunks skipped", async () => {
  const seen: { head: SeenHead; body: string }[] = [];
  await using server = keepAliveServer((head, body) => {
    seen.push({ head, body: decoder.decode(body) });
    return ok("fine");
  });
  using pool = poolFor(server);
  const response = await pool.request({
    ...get("/"),
    method: "PUT",
    body: streamOf(["alpha ", "", "beta ", "x".repeat(70_000)]),
  });
  assert.equal(await text(response.body), "fine");
  assert.equal(seen[0]?.head.headers.get("transfer-encoding"), "chunked");
  assert.equal(seen[0]?.head.headers.has("content-length"), false);
  assert.equal(seen[0]?.body, "alpha beta " + "x".repeat(70_000));
});

Deno.test("H1Pool refuses a body past maxBodyBytes with BodyTooLargeError and drops the socket", async () => {
  await using server = rawServer(async (peer) => {
    await peer.closed();
  });
  using pool = poolFor(server);
  await assert.rejects(
    pool.request({
      ...get("/"),
      method: "POST",
      body: streamOf(["12345", "67890"]),
      maxBodyBytes: 8,
    }),
    BodyTooLargeError,
  );
  assert.equal(pool.openCount, 0);
});

Deno.test("H1Pool decodes a chunked response, skipping extensions and trailers, and reuses the socket", async () => {
  await using server = keepAliveServer(() =>
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n" +
    `5;name=value;quoted="a;b"\r\nhello\r\n` +
    `1 ; ext\r\n \r\n` +
    `A\r\n0123456789\r\n` +
    `0;last\r\nx-sum: 42\r\nx-other: yes\r\n\r\n`
  );
  using pool = poolFor(server);
  for (let i = 0; i < 2; i++) {
    const response = await pool.request(get("/"));
    assert.equal(await text(response.body), "hello 0123456789");
  }
  assert.equal(server.accepted, 1, "the trailers were read past: the socket was reusable");
});

Deno.test("H1Pool treats a chunked response with a malformed size as an error and drops the socket", async () => {
  await using server = keepAliveServer(() =>
    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
  );
  using pool = poolFor(server);
  const response = await pool.request(get("/"));
  await assert.rejects(text(response.body), UpstreamProtocolError);
  assert.equal(pool.openCount, 0);
});

Deno.test("H1Pool does not reuse a socket after Connection: close", async () => {
  await using server = rawServer(async (peer) => {
    const head = await peer.head();
    if (head !== null) await peer.write(ok("bye", "Connection: close\r\n"));
    await peer.closed();
  });
  using pool = poolFor(server);
  for (let i = 0; i < 2; i++) {
    const response = await pool.request(get("/"));
    assert.equal(await text(response.body), "bye");
    assert.equal(pool.openCount, 0, "closed, not parked");
  }
  assert.equal(server.accepted, 2);
});

Deno.test("H1Pool reads an HTTP/1.0 response delimited by close", async () => {
  await using server = rawServer(async (peer) => {
    await peer.head();
    await peer.write("HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end");
  });
  using pool = poolFor(server);
  const response = await pool.request(get("/"));
  assert.equal(await text(response.body), "until the end");
  assert.equal(pool.openCount, 0);
});

Deno.test("H1Pool fails when the upstream closes mid-head, and drops the socket", async () => {
  await using server = rawServer(async (peer) => {
    await peer.head();
    await peer.write("HTTP/1.1 200 OK\r\ncontent-le");
  });
  using pool = poolFor(server);
  await assert.rejects(pool.request(get("/")), /mid-head/);
  assert.equal(pool.openCount, 0);
});

Deno.test("H1Pool fails the body when the upstream closes mid-body, and drops the socket", async () => {
  await using server = rawServer(async (peer) => {
    await peer.head();
    await peer.write("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b");
  });
  using pool = poolFor(server);
  const response = await pool.request(get("/"));
  await assert.rejects(text(response.body), /mid-body/);
  assert.equal(pool.openCount, 0);
});

Deno.test("H1Pool refuses a response head over 64 KiB", async () => {
  await using server = rawServer(async (peer) => {
    await peer.head();
    await peer.write("HTTP/1.1 200 OK\r\n");
    const field = `x-big: ${"b".repeat(1000)}\r\n`;
    for (let sent = 0; sent <= MAX_HEAD_BYTES; sent += field.length) await peer.write(field);
    await peer.closed();
  });
  using pool = poolFor(server);
  await assert.rejects(pool.request(get("/")), UpstreamProtocolError);
  assert.equal(pool.openCount, 0);
});

Deno.test("H1Pool accepts a head just under 64 KiB", async () => {
  const field = `x-big: ${"b".repeat(1000)}\r\n`;
  const fields = field.repeat(Math.floor((MAX_HEAD_BYTES - 200) / field.length));
  await using server = keepAliveServer(() => ok("fits", fields));
  using pool = poolFor(server);
  const response = await pool.request(get("/"));
  assert.equal(await text(response.body), "fits");
  assert.equal(response.headers.filter(([name]) => name === "x-big").length > 60, true);
});

Deno.test("H1Pool skips 1xx informational responses", async () => {
  await using server = keepAliveServer(() =>
    "HTTP/1.1 100 Continue\r\n\r\n" +
    "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n" +
    ok("final")
  );
  using pool = poolFor(server);
  const response = await pool.request(get("/"));
  assert.equal(response.status, 200);
  assert.equal(await text(response.body), "final");
  assert.equal(response.headers.some(([name]) => name === "link"), false);
});

Deno.test("H1Pool reads no body for HEAD, 204 and 304, and keeps the socket", async () => {
  const answers = [
    "HTTP/1.1 200 OK\r\ncontent-length: 1234\r\n\r\n",
    "HTTP/1.1 204 No Content\r\n\r\n",
    'HTTP/1.1 304 Not Modified\r\ncontent-length: 99\r\netag: "x"\r\n\r\n',
    ok("after"),
  ];
  let next = 0;
  await using server = keepAliveServer(() => answers[next++] ?? "");
  using pool = poolFor(server);
  const head = await pool.request(get("/", { method: "HEAD" }));
  assert.equal(head.status, 200);
  assert.equal(head.body, null);
  const empty = await pool.request(get("/"));
  assert.equal(empty.status, 204);
  assert.equal(empty.body, null);
  const unchanged = await pool.request(get("/"));
  assert.equal(unchanged.status, 304);
  assert.equal(unchanged.body, null);
  const after = await pool.request(get("/"));
  assert.equal(await text(after.body), "after");
  assert.equal(server.accepted, 1);
});

Deno.test("H1Pool parses a response written one byte at a time", async () => {
  await using server = rawServer(async (peer) => {
    const head = await peer.head();
    if (head === null) return;
    const bytes = encoder.encode(
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-slow: yes\r\n\r\n" +
        "3\r\nabc\r\n4;e=1\r\ndefg\r\n0\r\nt: 1\r\n\r\n",
    );
    for (const byte of bytes) await peer.write(Uint8Array.of(byte));
    await peer.closed();
  });
  using pool = poolFor(server);
  const response = await pool.request(get("/"));
  assert.deepEqual(response.headers, [["transfer-encoding", "chunked"], ["x-slow", "yes"]]);
  assert.equal(await text(response.body), "abcdefg");
});

Deno.test("H1Pool streams a slowly produced request body as it comes", async () => {
  const seen: string[] = [];
  await using server = keepAliveServer((_head, body) => {
    seen.push(decoder.decode(body));
    return ok("done");
  });
  using pool = poolFor(server);
  let produced = 0;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      await Promise.resolve();
      if (produced === 50) controller.close();
      else controller.enqueue(encoder.encode(`${produced++},`));
    },
  }, { highWaterMark: 0 });
  const response = await pool.request({ ...get("/"), method: "POST", body });
  assert.equal(await text(response.body), "done");
  assert.equal(seen[0], Array.from({ length: 50 }, (_, i) => `${i},`).join(""));
});

Deno.test("H1Pool does not read a response body ahead of a slow consumer", async () => {
  const totalBytes = 1024 * 1024 * 1024;
  let writtenBytes = 0;
  await using server = rawServer(async (peer) => {
    await peer.head();
    await peer.write(`HTTP/1.1 200 OK\r\ncontent-length: ${totalBytes}\r\n\r\n`);
    const block = new Uint8Array(256 * 1024);
    while (writtenBytes < totalBytes) {
      writtenBytes += await peer.conn.write(block);
    }
  });
  using pool = poolFor(server);
  const response = await pool.request(get("/"));
  assert.ok(response.body !== null);
  const reader = response.body.getReader();
  await reader.read();
  // Nothing to wait for here: this watches for something that must NOT happen.
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.ok(
    writtenBytes < 96 * 1024 * 1024,
    `the upstream got ${writtenBytes} bytes out: the client read ahead`,
  );
  await reader.cancel();
  assert.equal(pool.openCount, 0, "a cancelled body's socket is closed");
});

Deno.test("H1Pool tears down on abort mid-body: body errors, upstream sees the close", async () => {
  const upstreamSawClose = Promise.withResolvers<void>();
  await using server = rawServer(async (peer) => {
    await peer.head();
    await peer.write("HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nfirst");
    await peer.closed();
    upstreamSawClose.resolve();
  });
  using pool = poolFor(server);
  const abort = new AbortController();
  const response = await pool.request(get("/", { signal: abort.signal }));
  assert.ok(response.body !== null);
  const reader = response.body.getReader();
  assert.equal(decoder.decode((await reader.read()).value), "first");
  const pending = reader.read();
  abort.abort(new Error("client left"));
  await assert.rejects(pending, /client left/);
  await upstreamSawClose.promise;
  assert.equal(pool.openCount, 0);
});

Deno.test("H1Pool tears down on abort before the response head", async () => {
  const arrived = Promise.withResolvers<void>();
  const upstreamSawClose = Promise.withResolvers<void>();
  await using server = rawServer(async (peer) => {
    await peer.head();
    arrived.resolve();
    await peer.closed();
    upstreamSawClose.resolve();
  });
  using pool = poolFor(server);
  const abort = new AbortController();
  const call = pool.request(get("/", { signal: abort.signal }));
  await arrived.promise;
  abort.abort(new Error("too slow"));
  await assert.rejects(call, /too slow/);
  await upstreamSawClose.promise;
  assert.equal(pool.openCount, 0);
});

Deno.test("H1Pool queues requests FIFO at maxConnections and serves them as the socket frees", async () => {
  const order: string[] = [];
  const firstArrived = Promise.withResolvers<void>();
  const releaseFirst = Promise.withResolvers<void>();
  await using server = rawServer(async (peer) => {
    for (let head = await peer.head(); head !== null; head = await peer.head()) {
      const path = head.line.split(" ")[1] ?? "";
      order.push(path);
      if (path === "/first") {
        firstArrived.resolve();
        await releaseFirst.promise;
      }
      await peer.write(ok(path));
    }
  });
  using pool = poolFor(server, { maxConnections: 1 });
  const first = pool.request(get("/first"));
  await firstArrived.promise;
  const gaveUp = new AbortController();
  const second = pool.request(get("/second"));
  const abandoned = pool.request(get("/abandoned", { signal: gaveUp.signal }));
  const abandonedFailure = abandoned.then(() => undefined, (error: unknown) => error);
  const third = pool.request(get("/third"));
  const fourth = pool.request(get("/fourth"));
  gaveUp.abort(new Error("deadline"));
  assert.equal(pool.openCount, 1, "no second socket past maxConnections");
  releaseFirst.resolve();
  assert.equal(await text((await first).body), "/first");
  assert.match(String(await abandonedFailure), /deadline/);
  assert.equal(await text((await second).body), "/second");
  assert.equal(await text((await third).body), "/third");
  assert.equal(await text((await fourth).body), "/fourth");
  assert.deepEqual(order, ["/first", "/second", "/third", "/fourth"]);
  assert.equal(server.accepted, 1);
});

Deno.test("H1Pool closes a socket left idle for idleMs", async () => {
  const upstreamSawClose = Promise.withResolvers<void>();
  await using server = rawServer(async (peer) => {
    const head = await peer.head();
    if (head !== null) await peer.write(ok("once"));
    await peer.closed();
    upstreamSawClose.resolve();
  });
  using pool = poolFor(server, { idleMs: 50 });
  const response = await pool.request(get("/"));
  assert.equal(await text(response.body), "once");
  assert.equal(pool.idleCount, 1);
  await upstreamSawClose.promise;
  assert.equal(pool.openCount, 0);
  assert.equal(pool.idleCount, 0);
});

Deno.test("H1Pool drops an idle socket the upstream closed and opens a fresh one", async () => {
  const firstClosed = Promise.withResolvers<void>();
  await using server = rawServer(async (peer, index) => {
    const head = await peer.head();
    if (head !== null) await peer.write(ok(`connection ${index}`));
    if (index === 0) {
      closeQuietly(peer.conn);
      firstClosed.resolve();
      return;
    }
    await peer.closed();
  });
  using pool = poolFor(server);
  assert.equal(await text((await pool.request(get("/"))).body), "connection 0");
  await firstClosed.promise;
  const response = await pool.request({ ...get("/"), method: "POST", body: streamOf(["x"]) });
  assert.equal(await text(response.body), "connection 1");
  assert.equal(server.accepted, 2);
});

Deno.test("H1Pool retries a bodiless GET once when a reused socket fails before any response byte", async () => {
  await using server = rawServer(async (peer, index) => {
    const first = await peer.head();
    if (first === null) return;
    await peer.write(ok(`connection ${index}`));
    // The next request on this socket finds it gone, as if it had timed out upstream.
    if (await peer.head() !== null) closeQuietly(peer.conn);
  });
  using pool = poolFor(server);
  assert.equal(await text((await pool.request(get("/"))).body), "connection 0");
  assert.equal(await text((await pool.request(get("/"))).body), "connection 1");
  assert.equal(server.accepted, 2);
});

Deno.test("H1Pool does not retry a POST on a reused socket that fails", async () => {
  await using server = rawServer(async (peer, index) => {
    const first = await peer.head();
    if (first === null) return;
    await peer.body(first);
    await peer.write(ok(`connection ${index}`));
    if (await peer.head() !== null) closeQuietly(peer.conn);
  });
  using pool = poolFor(server);
  assert.equal(await text((await pool.request(get("/"))).body), "connection 0");
  await assert.rejects(pool.request({ ...get("/"), method: "POST", body: null }));
  assert.equal(server.accepted, 1);
});

Deno.test("H1Pool passes header bytes through unchanged (no decoding)", async () => {
  await using server = keepAliveServer(() =>
    concat([
      encoder.encode("HTTP/1.1 200 OK\r\nx-name: caf"),
      Uint8Array.of(0xe9),
      encoder.encode("\r\ncontent-length: 2\r\ncontent-encoding: gzip\r\n\r\n"),
      Uint8Array.of(0x1f, 0x8b),
    ])
  );
  using pool = poolFor(server);
  const response = await pool.request(get("/"));
  const name = response.headers.find(([field]) => field === "x-name")?.[1] ?? "";
  assert.equal(name.charCodeAt(3), 0xe9);
  assert.deepEqual(
    new Uint8Array(await new Response(response.body).arrayBuffer()),
    Uint8Array.of(0x1f, 0x8b),
  );
});
