/**
 * The one writer of the plans file (SPEC §6): admin edits run one at a time,
 * build on the file on disk, are validated as a whole file before anything
 * is written, are written atomically, and are live at once; the watcher does
 * not apply the writer's own write a second time.
 */

import assert from "node:assert/strict";
import { createKey } from "../../src/plans/key_admin.ts";
import { deletePlan, patchAccount, putPlan } from "../../src/plans/plan_admin.ts";
import { parsePlansText, renderPlansFile } from "../../src/plans/plans_file.ts";
import type { PlansFile } from "../../src/plans/schema.ts";
import { plansDocument } from "../_helpers.ts";
import { plansFixture } from "./_plans_fixture.ts";

const BASE = plansDocument(
  { free: { concurrency: 1 }, pro: { concurrency: 10 } },
  { acme: "pro", beta: "free" },
);

async function fileDocument(path: string): Promise<PlansFile> {
  const parsed = parsePlansText(await Deno.readTextFile(path), new Date());
  assert.ok(parsed.ok, "the file on disk is valid");
  return parsed.snapshot.document;
}

Deno.test("PlansWriter.update() runs concurrent edits one at a time, in order, losing none", async () => {
  await using fx = await plansFixture(BASE);
  const order: number[] = [];
  const results = await Promise.all(
    Array.from({ length: 60 }, (_, i) =>
      fx.writer.update((document) => {
        order.push(i);
        return putPlan(document, `p${i}`, { concurrency: i + 1 });
      })),
  );
  assert.ok(results.every((r) => r.ok));
  assert.deepEqual(order, Array.from({ length: 60 }, (_, i) => i));
  const onDisk = await fileDocument(fx.path);
  for (let i = 0; i < 60; i++) {
    assert.deepEqual(onDisk.plans[`p${i}`], { concurrency: i + 1 }, `p${i} on disk`);
    assert.equal(fx.config.current.plans.get(`p${i}`)?.concurrency, i + 1, `p${i} live`);
  }
  assert.deepEqual(
    [...Deno.readDirSync(fx.dir)].map((e) => e.name),
    ["plans.json"],
    "no temp file is left behind",
  );
});

Deno.test("PlansWriter.update() is live at once and the watcher does not apply its own write again", async () => {
  await using fx = await plansFixture(BASE);
  const swaps: string[] = [];
  using _ = { [Symbol.dispose]: fx.config.subscribe((s) => swaps.push(s.version)) };
  const result = await fx.writer.update((document) =>
    patchAccount(document, "beta", { plan: "pro" })
  );
  assert.equal(result.ok, true);
  assert.equal(fx.config.current.accounts.get("beta")?.plan.name, "pro");
  assert.equal(fx.config.lastReload.source, "admin");
  assert.equal(swaps.length, 1);

  assert.deepEqual(await fx.watcher.reloadNow("file"), { result: "unchanged" });
  assert.equal(swaps.length, 1, "no second swap for the gateway's own write");
  assert.deepEqual(fx.watcher.counts, { applied: 0, invalid: 0 });
});

Deno.test("an edit that would make the file invalid is refused with its paths; file and config unchanged", async () => {
  await using fx = await plansFixture(BASE);
  const before = await Deno.readTextFile(fx.path);
  const live = fx.config.current;
  const result = await fx.writer.update((document) =>
    patchAccount(document, "acme", { plan: "gold" })
  );
  assert.equal(result.ok, false);
  assert.ok(!result.ok && result.status === 400);
  assert.ok("errors" in result);
  assert.deepEqual(result.errors.map((e) => e.path), ["accounts.acme.plan"]);
  assert.equal(await Deno.readTextFile(fx.path), before);
  assert.equal(fx.config.current, live);

  const inUse = await fx.writer.update((document) => deletePlan(document, "pro"));
  assert.deepEqual(
    { ok: inUse.ok, status: !inUse.ok && inUse.status },
    { ok: false, status: 409 },
  );
  assert.equal(await Deno.readTextFile(fx.path), before);
});

Deno.test("an edit that throws rejects its own call and does not block the ones queued after it", async () => {
  await using fx = await plansFixture(BASE);
  const failing = fx.writer.update(() => {
    throw new Error("boom");
  });
  const next = fx.writer.update((document) => putPlan(document, "after", { concurrency: 3 }));
  await assert.rejects(failing, /boom/);
  assert.equal((await next).ok, true);
  assert.equal(fx.config.current.plans.get("after")?.concurrency, 3);
});

Deno.test("the writer builds on the file on disk, so a valid hand edit not yet reloaded is kept", async () => {
  await using fx = await plansFixture(BASE);
  const handEdited = structuredClone(BASE);
  handEdited.plans.hand = { concurrency: 4 };
  await Deno.writeTextFile(fx.path, renderPlansFile(handEdited));
  assert.equal(fx.config.current.plans.has("hand"), false, "not reloaded yet");

  assert.equal((await fx.writer.update((d) => putPlan(d, "admin", { concurrency: 5 }))).ok, true);
  const onDisk = await fileDocument(fx.path);
  assert.deepEqual(onDisk.plans.hand, { concurrency: 4 });
  assert.deepEqual(onDisk.plans.admin, { concurrency: 5 });
  assert.equal(fx.config.current.plans.get("hand")?.concurrency, 4);
});

Deno.test("over an invalid file on disk the writer builds on the live config and writes a valid file", async () => {
  await using fx = await plansFixture(BASE);
  await Deno.writeTextFile(fx.path, '{"plans": ');
  assert.equal((await fx.writer.update((d) => putPlan(d, "admin", { concurrency: 5 }))).ok, true);
  const onDisk = await fileDocument(fx.path);
  assert.deepEqual(Object.keys(onDisk.plans).sort(), ["admin", "free", "pro"]);
  assert.deepEqual(Object.keys(onDisk.accounts ?? {}).sort(), ["acme", "beta"]);
});

Deno.test("a created key is stored only as its sha256 hash", async () => {
  await using fx = await plansFixture(BASE);
  const result = await fx.writer.update((d, now) => createKey(d, "acme", now));
  assert.ok(result.ok);
  const text = await Deno.readTextFile(fx.path);
  assert.equal(text.includes(result.apiKey), false, "the plaintext key is not in the file");
  const stored = (await fileDocument(fx.path)).accounts?.acme?.keys?.find((k) =>
    k.id === result.keyId
  );
  assert.match(stored?.hash ?? "", /^sha256:[0-9a-f]{64}$/);
  assert.equal(stored?.createdAt, new Date(fx.clock.nowMs()).toISOString());
});
