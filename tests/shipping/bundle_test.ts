/**
 * The program is self-contained: `deno bundle` makes one file that runs from
 * an unrelated directory (nothing read relative to the source tree), creates
 * its plans file, answers a monitor call with every header, and exits 0 on
 * SIGTERM. Where a `denort` runtime is available (`DENORT_BIN`), the real
 * `deno compile` binary is checked the same way.
 */

import assert from "node:assert/strict";
import { startDeno } from "./_process.ts";

const root = new URL("../../", import.meta.url).pathname;

async function exerciseGateway(args: string[], cwd: string): Promise<void> {
  const proc = startDeno(args, cwd);
  try {
    const [, port] = await proc.waitForLine(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
    const [, key] = await proc.waitForLine(/^\s+(sk_[A-Za-z0-9_-]+)$/);
    if (args.includes("--workers")) {
      // The worker isolates start from the bundle itself (its own module URL).
      await proc.waitForLine(/2 data-plane isolates share port/);
    }
    const response = await fetch(`http://127.0.0.1:${port}/v1/monitor/chatgpt`, {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ prompt: "bundle smoke" }),
    });
    const body = await response.json();
    assert.equal(response.status, 200);
    assert.equal(body.success, true);
    assert.match(body.result.text, /bundle smoke/);
    for (
      const name of [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-concurrent-limit",
        "x-concurrent-current",
        "x-concurrent-remaining",
        "ratelimit-policy",
        "ratelimit",
        "x-request-id",
        "x-latency-ms",
      ]
    ) {
      assert.ok(response.headers.has(name), `missing ${name}`);
    }
    proc.child.kill("SIGTERM");
    const status = await proc.status;
    assert.equal(status.code, 0, await proc.stderr);
  } finally {
    try {
      proc.child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await proc.status.catch(() => {});
    await proc.stderr.catch(() => {});
  }
}

Deno.test("the bundle runs from an unrelated directory, starts its worker isolates and serves a monitor call", async () => {
  const out = await Deno.makeTempDir();
  const cwd = await Deno.makeTempDir();
  try {
    const bundle = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", "--output", `${out}/sluice.js`, `${root}main.ts`],
      cwd: root,
      stdout: "null",
      stderr: "piped",
    }).output();
    assert.equal(bundle.code, 0, new TextDecoder().decode(bundle.stderr));
    await exerciseGateway(
      [
        "run",
        "-A",
        "--unstable-net",
        `${out}/sluice.js`,
        "serve",
        "--port",
        "0",
        "--hostname",
        "127.0.0.1",
        "--sim-latency",
        "5-10",
        "--workers",
        "2",
      ],
      cwd,
    );
    const plans = JSON.parse(await Deno.readTextFile(`${cwd}/plans.json`));
    assert.ok(plans.plans.business, "standard plans written next to the working directory");
  } finally {
    await Deno.remove(out, { recursive: true });
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test({
  name: "deno compile makes one binary that serves (only where DENORT_BIN is set)",
  ignore: Deno.env.get("DENORT_BIN") === undefined,
  async fn() {
    const out = await Deno.makeTempDir();
    try {
      const compiled = await new Deno.Command(Deno.execPath(), {
        args: [
          "compile",
          "--unstable-net",
          "--allow-net",
          "--allow-read",
          "--allow-write",
          "--allow-env",
          "--allow-sys",
          "--output",
          `${out}/sluice`,
          `${root}main.ts`,
        ],
        cwd: root,
        stdout: "null",
        stderr: "piped",
      }).output();
      assert.equal(compiled.code, 0, new TextDecoder().decode(compiled.stderr));
      const proc = new Deno.Command(`${out}/sluice`, { args: ["--help"], stdout: "piped" });
      const help = await proc.output();
      assert.match(new TextDecoder().decode(help.stdout), /sluice serve/);
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
