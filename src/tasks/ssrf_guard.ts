/**
 * @module
 * Keeps webhooks from reaching inside the network (SPEC §5): a webhook URL
 * must be http(s) without credentials, and every address its host stands for
 * must be public, unless private targets are allowed. The URL parser has
 * already turned odd IPv4 spellings (`127.1`, `0x7f.0.0.1`, `2130706433`) into
 * dotted quads and IPv6 into hex groups, so only canonical forms reach the
 * range checks. Anything that does not parse as an address counts as private.
 *
 * `checkWebhookUrlSyntax` is the cheap check for submit time; `checkWebhookUrl`
 * also resolves the hostname and is run again before every attempt, because
 * DNS answers change. A refusal is a value; a failed lookup is thrown.
 */

/** Whether a webhook URL may be used, and if not, why. */
export type WebhookUrlCheck = { ok: true } | { ok: false; reason: string };

/** Resolves a hostname to its IPv4 and IPv6 addresses. */
export type HostResolver = (hostname: string) => Promise<string[]>;

/** Options for {@linkcode checkWebhookUrlSyntax}. */
export interface WebhookUrlSyntaxOptions {
  /** Allow private, loopback and link-local targets (`--allow-private-webhooks`); default false. */
  allowPrivate?: boolean;
}

/** Options for {@linkcode checkWebhookUrl}. */
export interface WebhookUrlOptions extends WebhookUrlSyntaxOptions {
  /** Looks up a hostname; default: DNS A and AAAA records via `Deno.resolveDns`. */
  resolve?: HostResolver | undefined;
  /** Abandons the lookup (shutdown, attempt timeout). */
  signal?: AbortSignal | undefined;
}

/** A classified URL host. */
type Host =
  | { kind: "address"; address: string }
  | { kind: "localhost" }
  | { kind: "name"; hostname: string };

type Parsed = { ok: true; host: Host } | { ok: false; reason: string };

/** IPv4 ranges that are not public: [network, prefix length]. */
const PRIVATE_IPV4: readonly (readonly [number, number])[] = [
  [ipv4(0, 0, 0, 0), 8], // "this network"
  [ipv4(10, 0, 0, 0), 8],
  [ipv4(100, 64, 0, 0), 10], // carrier-grade NAT
  [ipv4(127, 0, 0, 0), 8],
  [ipv4(169, 254, 0, 0), 16], // link-local, cloud metadata
  [ipv4(172, 16, 0, 0), 12],
  [ipv4(192, 168, 0, 0), 16],
  [ipv4(224, 0, 0, 0), 4], // multicast
  [ipv4(240, 0, 0, 0), 4], // reserved, including 255.255.255.255 broadcast
];

/**
 * Whether `ip` (IPv4 dotted quad or IPv6, brackets and zone allowed) is not a
 * public unicast address. Text that is not an address counts as private.
 */
export function isPrivateAddress(ip: string): boolean {
  const v4 = parseIpv4(ip);
  if (v4 !== undefined) return isPrivateIpv4(v4);
  const v6 = parseIpv6(ip);
  if (v6 !== undefined) return isPrivateIpv6(v6);
  return true;
}

/**
 * Checks what can be checked without DNS: http(s), parses, no credentials,
 * and (unless `allowPrivate`) not a private literal address or `localhost`.
 */
export function checkWebhookUrlSyntax(
  url: string,
  options: WebhookUrlSyntaxOptions = {},
): WebhookUrlCheck {
  const { allowPrivate = false } = options;
  const parsed = parseWebhookUrl(url);
  return parsed.ok ? checkLiteralHost(parsed.host, allowPrivate) : parsed;
}

/**
 * Everything {@linkcode checkWebhookUrlSyntax} checks, plus (unless
 * `allowPrivate`) every address the hostname resolves to must be public.
 * Rejects when the hostname cannot be resolved.
 */
export async function checkWebhookUrl(
  url: string,
  options: WebhookUrlOptions = {},
): Promise<WebhookUrlCheck> {
  const { allowPrivate = false, resolve, signal } = options;
  const parsed = parseWebhookUrl(url);
  if (!parsed.ok) return parsed;
  const literal = checkLiteralHost(parsed.host, allowPrivate);
  if (!literal.ok || allowPrivate || parsed.host.kind !== "name") return literal;
  const { hostname } = parsed.host;
  const lookup = resolve === undefined ? resolveSystem(hostname, signal) : resolve(hostname);
  const addresses = await abandonOnAbort(lookup, signal);
  if (addresses.length === 0) throw new Error(`${hostname} has no addresses`);
  const blocked = addresses.find((address) => isPrivateAddress(address));
  if (blocked !== undefined) return refuse(`${hostname} resolves to private address ${blocked}`);
  return { ok: true };
}

function parseWebhookUrl(url: string): Parsed {
  const parsed = URL.parse(url);
  if (parsed === null) return refuse("not a valid URL");
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    return refuse(`scheme ${parsed.protocol} is not http or https`);
  }
  if (parsed.username !== "" || parsed.password !== "") {
    return refuse("URL must not contain credentials");
  }
  return { ok: true, host: classifyHost(parsed.hostname) };
}

function checkLiteralHost(host: Host, allowPrivate: boolean): WebhookUrlCheck {
  if (allowPrivate) return { ok: true };
  if (host.kind === "localhost") return refuse("localhost is a loopback address");
  if (host.kind === "address" && isPrivateAddress(host.address)) {
    return refuse(`${host.address} is a private address`);
  }
  return { ok: true };
}

function classifyHost(hostname: string): Host {
  if (hostname.startsWith("[")) return { kind: "address", address: hostname.slice(1, -1) };
  if (parseIpv4(hostname) !== undefined) return { kind: "address", address: hostname };
  const name = hostname.endsWith(".") ? hostname.slice(0, -1) : hostname;
  // RFC 6761: resolvers answer localhost and its subdomains with loopback, without asking DNS.
  if (name === "localhost" || name.endsWith(".localhost")) return { kind: "localhost" };
  return { kind: "name", hostname: name };
}

/** A and AAAA together; one of them failing is fine (a v4-only or v6-only host). */
async function resolveSystem(hostname: string, signal: AbortSignal | undefined): Promise<string[]> {
  const options = signal === undefined ? {} : { signal };
  const lookups = await Promise.allSettled([
    Deno.resolveDns(hostname, "A", options),
    Deno.resolveDns(hostname, "AAAA", options),
  ]);
  const addresses = lookups.flatMap((lookup) => lookup.status === "fulfilled" ? lookup.value : []);
  const failure = lookups.find((lookup) => lookup.status === "rejected");
  if (addresses.length === 0 && failure !== undefined) throw failure.reason;
  return addresses;
}

/** Settles with `promise`, or rejects with the abort reason as soon as `signal` fires. */
function abandonOnAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  signal.throwIfAborted();
  const { promise: aborted, reject } = Promise.withResolvers<never>();
  const onAbort = () => reject(signal.reason);
  signal.addEventListener("abort", onAbort, { once: true });
  return Promise.race([promise, aborted]).finally(() => {
    signal.removeEventListener("abort", onAbort);
  });
}

function refuse(reason: string): { ok: false; reason: string } {
  return { ok: false, reason };
}

function ipv4(a: number, b: number, c: number, d: number): number {
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

function isPrivateIpv4(address: number): boolean {
  return PRIVATE_IPV4.some(([network, prefixLength]) => {
    const shift = 32 - prefixLength;
    return address >>> shift === network >>> shift;
  });
}

/** Strict dotted quad, decimal, no leading zeros (which some parsers read as octal). */
function parseIpv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let address = 0;
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    address = address * 256 + octet;
  }
  return address;
}

function isPrivateIpv6(bytes: Uint8Array): boolean {
  const [b0 = 0, b1 = 0] = bytes;
  const zeros = (from: number, to: number) => bytes.subarray(from, to).every((byte) => byte === 0);
  const embeddedIpv4 = (offset: number) => {
    const [a = 0, b = 0, c = 0, d = 0] = bytes.subarray(offset, offset + 4);
    return isPrivateIpv4(ipv4(a, b, c, d));
  };
  // ::/96 holds :: and ::1 as well as the old IPv4-compatible form.
  if (zeros(0, 12)) return true;
  // ::ffff:a.b.c.d (mapped) and ::ffff:0:a.b.c.d (translated) reach the embedded IPv4.
  if (zeros(0, 10) && bytes[10] === 0xff && bytes[11] === 0xff) return embeddedIpv4(12);
  if (zeros(0, 8) && bytes[8] === 0xff && bytes[9] === 0xff && zeros(10, 12)) {
    return embeddedIpv4(12);
  }
  // 64:ff9b::/96 (NAT64) and 2002::/16 (6to4) route to an embedded IPv4 too.
  if (b0 === 0x00 && b1 === 0x64 && bytes[2] === 0xff && bytes[3] === 0x9b && zeros(4, 12)) {
    return embeddedIpv4(12);
  }
  if (b0 === 0x20 && b1 === 0x02) return embeddedIpv4(2);
  if ((b0 & 0xfe) === 0xfc) return true; // fc00::/7 unique local
  if (b0 === 0xfe && (b1 & 0xc0) === 0x80) return true; // fe80::/10 link-local
  if (b0 === 0xfe && (b1 & 0xc0) === 0xc0) return true; // fec0::/10 old site-local
  if (b0 === 0xff) return true; // ff00::/8 multicast
  return false;
}

/** Sixteen bytes, or undefined; accepts brackets, a `%zone` and a dotted-quad tail. */
function parseIpv6(text: string): Uint8Array | undefined {
  let rest = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  const zone = rest.indexOf("%");
  if (zone !== -1) rest = rest.slice(0, zone);
  if (!rest.includes(":")) return undefined;
  const halves = rest.split("::");
  if (halves.length > 2) return undefined;
  const [headText = "", tailText = ""] = halves;
  const compressed = halves.length === 2;
  const head = parseGroups(headText, !compressed);
  const tail = compressed ? parseGroups(tailText, true) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (compressed ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...new Array<number>(missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  groups.forEach((group, index) => {
    bytes[index * 2] = group >> 8;
    bytes[index * 2 + 1] = group & 0xff;
  });
  return bytes;
}

/** 16-bit groups of `a:b:c`; a final dotted quad counts as two groups when allowed. */
function parseGroups(text: string, ipv4Tail: boolean): number[] | undefined {
  if (text === "") return [];
  const parts = text.split(":");
  const groups: number[] = [];
  for (const [index, part] of parts.entries()) {
    if (ipv4Tail && index === parts.length - 1 && part.includes(".")) {
      const v4 = parseIpv4(part);
      if (v4 === undefined) return undefined;
      groups.push(v4 >>> 16, v4 & 0xffff);
    } else if (/^[0-9a-f]{1,4}$/i.test(part)) {
      groups.push(parseInt(part, 16));
    } else {
      return undefined;
    }
  }
  return groups;
}
