/**
 * No reader, crash or concurrent edit ever sees a torn plans file (SPEC §6).
 *
 * 1. Fuzz: hundreds of admin writes queued at once, a "hand editor" saving
 *    valid files by temp + rename in parallel, a started watcher, and a
 *    reader that reads and validates the file on disk after every change and
 *    in a loop in between. Every read must parse and validate.
 * 2. Crash: a child process writing large documents for ever is killed with
 *    SIGKILL at varying points; the file left behind is exactly the old or
 *    the new document.
 */

import assert from "node:assert/strict";
import { createKey } from "../../src/plans/key_admin.ts";
import { patchAccount, putPlan } from "../../src/plans/plan_admin.ts";
import { loadPlansFile, parsePlansText, renderPlansFile } from "../../src/plans/plans_file.ts";
import { PlansWatcher } from "../../src/plans/plans_watcher.ts";
import { PlansWriter } from "../../src/plans/plans_writer.ts";
import type { PlansFile } from "../../src/plans/schema.ts";
import { ConfigStore } from "../../src/plans/snapshot.ts";
import { FakeClock, plansDocument } from "../_helpers.ts";
import { startDeno } from "../shipping/_process.ts";
import { bigPlansText } from "./_write_forever.ts";

const ADMIN_WRITES = 300;
const HAND_EDITS = 60;
const SEED = 20260101;

/** mulberry32: a small seeded PRNG, so a failing run can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PLAN_NAMES = ["free", "lite", "business", "pro"] as const;

/** The base document: standard plans, ten named accounts and bulk to make writes large. */
function baseDocument(): PlansFile {
  const accounts: Record<string, string> = {};
  for (let i = 0; i < 10; i++) accounts[`acct${i}`] = PLAN_NAMES[i % 4] ?? "free";
  for (let i = 0; i < 300; i++) accounts[`bulk${i}`] = "free";
  return plansDocument({
    free: { concurrency: 1 },
    lite: { concurrency: 10 },
    business: { concurrency: 100 },
    pro: { concurrency: 20, rateLimit: { requests: 1000, windowMs: 1000 } },
  }, accounts);
}

/** Reads the file on disk and fails the test unless it parses and validates. */
async function assertFileValid(path: string, when: string): Promise<void> {
  const text = await Deno.readTextFile(path);
  const parsed = parsePlansText(text, new Date());
  if (!parsed.ok) {
    assert.fail(
      `torn or invalid plans file ${when} (seed ${SEED}): ${JSON.stringify(parsed.errors)}; ` +
        `${text.length} chars, ends with ${JSON.stringify(text.slice(-80))}`,
    );
  }
}

Deno.test("a truncated plans file is caught by the reader's check (the fuzz below can fail)", () => {
  const text = renderPlansFile(baseDocument());
  for (const share of [0, 0.25, 0.5, 0.999]) {
    const torn = text.slice(0, Math.floor(text.length * share));
    assert.equal(parsePlansText(torn, new Date()).ok, false, `${share} of the file`);
  }
});

Deno.test(`${ADMIN_WRITES} concurrent admin writes, parallel hand saves and a watcher: every read of the file validates`, async () => {
  const random = seededRandom(SEED);
  const dir = await Deno.makeTempDir({ prefix: "sluice_torn_" });
  const path = `${dir}/plans.json`;
  const initial = renderPlansFile(baseDocument());
  await Deno.writeTextFile(path, initial);
  const clock = new FakeClock();
  const loaded = await loadPlansFile(path, new Date(clock.nowMs()));
  assert.ok(loaded.ok);
  const config = new ConfigStore(loaded.snapshot);
  const watcher = new PlansWatcher(path, { config, clock, debounceMs: 10, pollMs: 50 });
  watcher.markLive(initial);
  await watcher.start();
  const writer = new PlansWriter(path, { config, clock, watcher });
  let reads = 0;
  const check = async (when: string) => {
    await assertFileValid(path, when);
    reads++;
  };
  try {
    // Every admin write is queued at once, none awaited before the next is fired.
    const writes = Array.from({ length: ADMIN_WRITES }, (_, i) => {
      const kind = i % 3;
      const account = `acct${Math.floor(random() * 10)}`;
      const plan = PLAN_NAMES[Math.floor(random() * PLAN_NAMES.length)] ?? "free";
      const concurrency = 1 + Math.floor(random() * 200);
      return writer.update((document, now) =>
        kind === 0
          ? putPlan(document, `p${i % 25}`, {
            concurrency,
            rateLimit: { requests: 100 + i, windowMs: 1000 },
          })
          : kind === 1
          ? patchAccount(document, account, { plan })
          : createKey(document, account, now)
      ).then(async (result) => {
        await check(`after admin write ${i}`);
        return result;
      });
    });

    let writesDone = false;
    const settled = Promise.all(writes).finally(() => writesDone = true);
    const handEditor = (async () => {
      for (let i = 0; i < HAND_EDITS; i++) {
        const document = baseDocument();
        document.plans.hand = { concurrency: 1 + i, queueLimit: 10 + i };
        const temp = `${dir}/.plans.json.hand${i}.swp`;
        await Deno.writeTextFile(temp, renderPlansFile(document));
        await Deno.rename(temp, path);
        await check(`after hand save ${i}`);
      }
    })();
    const reader = (async () => {
      while (!writesDone) await check("in the reader loop");
    })();

    const results = await settled;
    await Promise.all([handEditor, reader]);
    for (const [i, result] of results.entries()) {
      assert.equal(result.ok, true, `admin write ${i}: ${JSON.stringify(result)}`);
    }
    assert.ok(reads >= ADMIN_WRITES + HAND_EDITS, `${reads} reads`);
    await check("at the end");
    assert.notEqual((await watcher.reloadNow("test")).result, "invalid");
    assert.equal(watcher.counts.invalid, 0, "the watcher never read a torn file");
    assert.equal(config.lastReload.ok, true);
  } finally {
    await watcher.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SIGKILL during a stream of atomic writes leaves exactly the old or the new file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sluice_kill_" });
  const path = `${dir}/plans.json`;
  const script = new URL("./_write_forever.ts", import.meta.url).pathname;
  const texts = [bigPlansText(0), bigPlansText(1)];
  await Deno.writeTextFile(path, texts[0] ?? "");
  try {
    // Kill after a different number of completed writes each round (about
    // 30-300 ms of writing here), so the kill lands in different phases of
    // the write in progress.
    for (const writes of [15, 45, 75, 105, 135]) {
      const child = startDeno(["run", "-A", script, path], dir);
      await child.waitForLine(/^writing$/);
      await child.waitForLine(new RegExp(`^wrote ${writes}$`));
      child.child.kill("SIGKILL");
      const status = await child.status;
      await child.stderr;
      assert.equal(status.signal, "SIGKILL", `round ${writes}: killed, not exited`);

      const text = await Deno.readTextFile(path);
      const which = texts.indexOf(text);
      assert.ok(which >= 0, `round ${writes}: the file is neither document (${text.length} chars)`);
      assert.ok(parsePlansText(text, new Date()).ok, `round ${writes}: the file validates`);
    }
    // Stray temp files may be left by a kill between create and rename; they
    // are harmless (never the target's name) and the target is intact.
    const names = [...Deno.readDirSync(dir)].map((e) => e.name);
    assert.ok(names.includes("plans.json"));
    for (const name of names) {
      if (name !== "plans.json") assert.match(name, /^\.plans\.json\..+\.tmp$/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
