/** The CLI as a user runs it: exit codes and readable output. */

import assert from "node:assert/strict";
import { hashApiKey } from "../../src/plans/api_key.ts";
import { parsePlansText } from "../../src/plans/plans_file.ts";

const main = new URL("../../main.ts", import.meta.url).pathname;

async function sluice(args: string[], cwd: string) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, ...args],
    cwd,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("`sluice plans check` exits 1 and names each bad field's JSON path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/bad.json`,
      JSON.stringify({
        plans: { free: { concurrency: -1 } },
        accounts: { acme: { plan: "gold", keys: [] } },
      }),
    );
    const bad = await sluice(["plans", "check", "bad.json"], dir);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /plans\.free\.concurrency: /);
    assert.match(bad.stderr, /accounts\.acme\.plan: unknown plan "gold"/);

    await Deno.writeTextFile(
      `${dir}/good.json`,
      JSON.stringify({ plans: { free: { concurrency: 1 } } }),
    );
    const good = await sluice(["plans", "check", "good.json"], dir);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /good\.json: ok \(1 plans, 0 accounts/);

    const missing = await sluice(["plans", "check", "nope.json"], dir);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /file not found/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("`sluice keys create` prints a key once and stores only its hash; revoke disables it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/plans.json`,
      JSON.stringify({ plans: { free: { concurrency: 1 } }, accounts: { acme: { plan: "free" } } }),
    );
    const created = await sluice(
      ["keys", "create", "--account", "acme", "--plans", "plans.json"],
      dir,
    );
    assert.equal(created.code, 0, created.stderr);
    const key = /^(sk_[A-Za-z0-9_-]+)$/m.exec(created.stdout)?.[1];
    assert.ok(key, created.stdout);
    const text = await Deno.readTextFile(`${dir}/plans.json`);
    assert.ok(!text.includes(key), "the plaintext key must not be stored");
    const loaded = parsePlansText(text, new Date());
    assert.ok(loaded.ok);
    const owner = loaded.ok ? loaded.snapshot.keysByHash.get(hashApiKey(key)) : undefined;
    assert.equal(owner?.account.id, "acme");

    const revoked = await sluice(
      [
        "keys",
        "revoke",
        "--account",
        "acme",
        "--key-id",
        owner?.keyId ?? "",
        "--plans",
        "plans.json",
      ],
      dir,
    );
    assert.equal(revoked.code, 0, revoked.stderr);
    const after = parsePlansText(await Deno.readTextFile(`${dir}/plans.json`), new Date());
    assert.ok(after.ok && !after.snapshot.keysByHash.has(hashApiKey(key)));

    const unknown = await sluice(
      ["keys", "create", "--account", "nobody", "--plans", "plans.json"],
      dir,
    );
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no account "nobody"/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("`sluice serve` rejects a bad flag with a message and exit 2", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const result = await sluice(["serve", "--sim-latency", "9-1"], dir);
    assert.equal(result.code, 2);
    assert.match(result.stderr, /--sim-latency must be MIN-MAX/);
    const env = await sluice(["serve", "--bogus"], dir);
    assert.equal(env.code, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
