/**
 * HTTP/1.1 framing for `H1Pool`: the request head and body chunks as bytes,
 * the response head parsed (status, fields, keep-alive, framing), and the
 * response body read by its framing (length, chunked, or until close).
 */

import type { H1Connection } from "./_h1_connection.ts";
import type { H1Request } from "./h1_pool.ts";

/** The largest response head (and chunk-size line, and trailer section) accepted. */
export const MAX_HEAD_BYTES = 64 * 1024;
const READ_BYTES = 64 * 1024;
const MAX_INFORMATIONAL = 32;
const OWN_HEADERS = new Set(["host", "content-length", "transfer-encoding", "connection"]);
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const STATUS_LINE = /^HTTP\/1\.([01]) ([0-9]{3})(?: (.*))?$/;
const NON_ASCII = /[\u0080-\uffff]/;
const encoder = new TextEncoder();

/** A response that breaks HTTP/1.1 framing (or a limit on it). */
export class UpstreamProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UpstreamProtocolError";
  }
}

/** The request head as bytes: request line, end-to-end fields, then the pool's own. */
export function requestHead(request: H1Request, host: string): Uint8Array {
  const { method, path, headers, body, bodyLength } = request;
  let head = `${method} ${path} HTTP/1.1\r\nhost: ${host}\r\n`;
  for (const [name, value] of headers) {
    if (!OWN_HEADERS.has(name.toLowerCase())) head += `${name}: ${value}\r\n`;
  }
  if (body === null) {
    if (method === "POST" || method === "PUT" || method === "PATCH") {
      head += "content-length: 0\r\n";
    }
    return encodeLatin1(head + "\r\n");
  }
  head += bodyLength === undefined
    ? "transfer-encoding: chunked\r\n\r\n"
    : `content-length: ${bodyLength}\r\n\r\n`;
  return encodeLatin1(head);
}

/** The zero-size chunk and empty trailer section that end a chunked body. */
export const LAST_CHUNK: Uint8Array = encoder.encode("0\r\n\r\n");

/** `data` framed as one chunk of a chunked body. */
export function chunkFrame(data: Uint8Array): Uint8Array {
  const size = encoder.encode(`${data.byteLength.toString(16)}\r\n`);
  const frame = new Uint8Array(size.byteLength + data.byteLength + 2);
  frame.set(size, 0);
  frame.set(data, size.byteLength);
  frame[frame.length - 2] = 13;
  frame[frame.length - 1] = 10;
  return frame;
}

/** `a` then `b` in one buffer, so they go out in one write. */
export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
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

/** A parsed response head and how its body is framed. */
export interface ResponseHead {
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
export async function readFinalHead(connection: H1Connection): Promise<ResponseHead> {
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

/** A reader of the body that follows `head` on `connection`. */
export function bodyDecoder(connection: H1Connection, head: ResponseHead): BodyDecoder {
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
