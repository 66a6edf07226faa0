/**
 * The SSRF guard for webhook URLs (SPEC §5): which addresses count as
 * private, what the submit-time syntax check refuses, and that the full check
 * judges every resolved address. Resolution is injected and nothing is ever
 * fetched, so no traffic leaves the machine.
 */

import assert from "node:assert/strict";
import {
  checkWebhookUrl,
  checkWebhookUrlSyntax,
  type HostResolver,
  isPrivateAddress,
} from "../../src/tasks/ssrf_guard.ts";

const PRIVATE_ADDRESSES = [
  "0.0.0.0",
  "0.1.2.3",
  "10.0.0.1",
  "10.255.255.255",
  "100.64.0.1",
  "100.127.255.254",
  "127.0.0.1",
  "127.255.0.9",
  "169.254.169.254",
  "172.16.0.1",
  "172.31.255.255",
  "192.168.1.1",
  "224.0.0.1",
  "239.255.255.250",
  "240.0.0.1",
  "255.255.255.255",
  "::",
  "::1",
  "[::1]",
  "fc00::1",
  "fd12:3456:789a::1",
  "fe80::1",
  "fe80::1%eth0",
  "febf::1",
  "fec0::1",
  "ff02::1",
  "::ffff:127.0.0.1",
  "::ffff:7f00:1",
  "::ffff:10.1.2.3",
  "::ffff:a9fe:a9fe",
  "0:0:0:0:0:ffff:c0a8:0101",
  "::127.0.0.1",
  "64:ff9b::10.0.0.1",
  "2002:a00:1::",
  // Not an address at all: fail closed.
  "",
  "example.com",
  "256.1.1.1",
  "1.2.3",
  "010.0.0.1",
  "1::2::3",
  "12345::1",
  "1:2:3:4:5:6:7:8:9",
];

const PUBLIC_ADDRESSES = [
  "1.1.1.1",
  "8.8.8.8",
  "93.184.216.34",
  "100.63.255.255",
  "100.128.0.0",
  "172.15.255.255",
  "172.32.0.0",
  "169.253.255.255",
  "192.167.255.255",
  "223.255.255.255",
  "2606:2800:220:1:248:1893:25c8:1946",
  "2001:4860:4860::8888",
  "[2a00:1450:4001::200e]",
  "::ffff:93.184.216.34",
  "::ffff:5db8:d822",
  "64:ff9b::8.8.8.8",
  "2002:808:808::",
];

Deno.test("isPrivateAddress() refuses private, loopback, link-local, reserved and unparseable", () => {
  for (const address of PRIVATE_ADDRESSES) {
    assert.equal(isPrivateAddress(address), true, address);
  }
});

Deno.test("isPrivateAddress() accepts public unicast, including public IPv4 inside IPv6", () => {
  for (const address of PUBLIC_ADDRESSES) {
    assert.equal(isPrivateAddress(address), false, address);
  }
});

Deno.test("checkWebhookUrlSyntax() refuses non-http schemes, credentials and bad URLs", () => {
  for (
    const url of [
      "ftp://example.com/hook",
      "file:///etc/passwd",
      "javascript:alert(1)",
      "ws://example.com/",
      "http://user:pass@example.com/",
      "https://user@example.com/",
      "not a url",
      "",
    ]
  ) {
    const verdict = checkWebhookUrlSyntax(url, { allowPrivate: true });
    assert.equal(verdict.ok, false, url);
  }
  assert.deepEqual(checkWebhookUrlSyntax("ftp://example.com/"), {
    ok: false,
    reason: "scheme ftp: is not http or https",
  });
});

Deno.test("checkWebhookUrlSyntax() refuses private literals and localhost in every spelling", () => {
  for (
    const url of [
      "http://127.0.0.1/",
      "http://127.1/",
      "http://2130706433/",
      "http://0x7f.0.0.1/",
      "http://0/",
      "http://localhost:8080/",
      "http://LOCALHOST./",
      "http://api.localhost/",
      "http://10.1.2.3/",
      "http://169.254.169.254/latest/meta-data/",
      "http://[::1]/",
      "http://[::ffff:127.0.0.1]/",
      "https://[fd00::1]:8443/",
      "http://[fe80::1]/",
    ]
  ) {
    const verdict = checkWebhookUrlSyntax(url);
    assert.equal(verdict.ok, false, url);
  }
});

Deno.test("checkWebhookUrlSyntax() accepts public literals and hostnames, and private ones when allowed", () => {
  assert.deepEqual(checkWebhookUrlSyntax("https://93.184.216.34/hook"), { ok: true });
  assert.deepEqual(checkWebhookUrlSyntax("https://hooks.example.com/x?y=1"), { ok: true });
  assert.deepEqual(checkWebhookUrlSyntax("http://[2001:4860:4860::8888]/"), { ok: true });
  const allowed = { allowPrivate: true };
  assert.deepEqual(checkWebhookUrlSyntax("http://127.0.0.1:9/", allowed), { ok: true });
  assert.deepEqual(checkWebhookUrlSyntax("http://localhost/", allowed), { ok: true });
});

/** A resolver from a fixed table that records what it was asked. */
function tableResolver(table: Record<string, string[]>): HostResolver & { asked: string[] } {
  const asked: string[] = [];
  function resolve(hostname: string): Promise<string[]> {
    asked.push(hostname);
    const addresses = table[hostname];
    if (addresses === undefined) return Promise.reject(new Error(`NXDOMAIN ${hostname}`));
    return Promise.resolve(addresses);
  }
  return Object.assign(resolve, { asked });
}

Deno.test("checkWebhookUrl() refuses private literals without resolving anything", async () => {
  const resolve = tableResolver({});
  for (
    const url of [
      "http://127.0.0.1/",
      "http://localhost/",
      "http://10.1.2.3/",
      "http://169.254.169.254/",
      "http://[::1]/",
      "http://[::ffff:127.0.0.1]/",
    ]
  ) {
    const verdict = await checkWebhookUrl(url, { resolve });
    assert.equal(verdict.ok, false, url);
  }
  assert.deepEqual(await checkWebhookUrl("ftp://example.com/", { resolve }), {
    ok: false,
    reason: "scheme ftp: is not http or https",
  });
  assert.deepEqual(resolve.asked, []);
});

Deno.test("checkWebhookUrl() refuses a hostname if any of its addresses is private", async () => {
  const resolve = tableResolver({
    "internal.example.com": ["10.0.0.5"],
    "metadata.example.com": ["169.254.169.254"],
    "mixed.example.com": ["93.184.216.34", "fd00::7"],
    "rebind.example.com": ["::ffff:127.0.0.1"],
  });
  const mixed = await checkWebhookUrl("https://mixed.example.com/hook", { resolve });
  assert.deepEqual(mixed, {
    ok: false,
    reason: "mixed.example.com resolves to private address fd00::7",
  });
  for (const hostname of ["internal", "metadata", "rebind"]) {
    const verdict = await checkWebhookUrl(`http://${hostname}.example.com/`, { resolve });
    assert.equal(verdict.ok, false, hostname);
  }
  assert.deepEqual(resolve.asked, [
    "mixed.example.com",
    "internal.example.com",
    "metadata.example.com",
    "rebind.example.com",
  ]);
});

Deno.test("checkWebhookUrl() accepts public addresses (verdict only, nothing is fetched)", async () => {
  const resolve = tableResolver({ "hooks.example.com": ["93.184.216.34", "2606:2800:220:1::1"] });
  assert.deepEqual(await checkWebhookUrl("https://hooks.example.com/in", { resolve }), {
    ok: true,
  });
  assert.deepEqual(await checkWebhookUrl("http://93.184.216.34/in", { resolve }), { ok: true });
  assert.deepEqual(resolve.asked, ["hooks.example.com"]);
});

Deno.test("checkWebhookUrl() with allowPrivate skips resolution but still checks the scheme", async () => {
  const resolve = tableResolver({});
  const options = { allowPrivate: true, resolve };
  assert.deepEqual(await checkWebhookUrl("http://127.0.0.1:1/", options), { ok: true });
  assert.deepEqual(await checkWebhookUrl("http://internal.example.com/", options), { ok: true });
  assert.equal((await checkWebhookUrl("ftp://127.0.0.1/", options)).ok, false);
  assert.deepEqual(resolve.asked, []);
});

Deno.test("checkWebhookUrl() rejects when the hostname does not resolve or has no addresses", async () => {
  const resolve = tableResolver({ "empty.example.com": [] });
  await assert.rejects(checkWebhookUrl("http://missing.example.com/", { resolve }), /NXDOMAIN/);
  await assert.rejects(
    checkWebhookUrl("http://empty.example.com/", { resolve }),
    /has no addresses/,
  );
});

Deno.test("checkWebhookUrl() gives up on a hanging lookup when its signal fires", async () => {
  const controller = new AbortController();
  const hanging: HostResolver = () => new Promise<string[]>(() => {});
  const verdict = checkWebhookUrl("http://slow.example.com/", {
    resolve: hanging,
    signal: controller.signal,
  });
  controller.abort(new Error("shutting down"));
  await assert.rejects(verdict, /shutting down/);
});
