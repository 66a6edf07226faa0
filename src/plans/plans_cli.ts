/**
 * @module
 * The plans-file commands of the CLI: `sluice plans check FILE` and
 * `sluice keys create|revoke`. They edit the file the way the admin API does
 * (pure edit, then an atomic write), so they are safe next to a running
 * gateway, which picks the change up like a hand edit. Exit codes: 0 done,
 * 1 refused or invalid, 2 usage.
 */

import { parseArgs } from "node:util";
import type { Clock } from "../limits/clock.ts";
import { createKey, type EditResult, revokeKey } from "./key_admin.ts";
import { loadPlansFile, renderPlansFile, writeFileAtomic } from "./plans_file.ts";
import type { PlansFile } from "./schema.ts";

/** `sluice plans check FILE`: prints what is wrong, one line per JSON path. */
export async function plansCheckCommand(path: string | undefined, clock: Clock): Promise<number> {
  if (path === undefined) {
    console.error("usage: sluice plans check FILE");
    return 2;
  }
  const result = await loadPlansFile(path, new Date(clock.nowMs()));
  if (result.ok) {
    const s = result.snapshot;
    console.log(
      `${path}: ok (${s.plans.size} plans, ${s.accounts.size} accounts, version ${s.version})`,
    );
    return 0;
  }
  console.error(`${path}: ${result.errors.length} error(s)`);
  for (const e of result.errors) console.error(`  ${e.path}: ${e.message}`);
  return 1;
}

async function editPlans(
  path: string,
  clock: Clock,
  edit: (document: PlansFile, now: Date) => EditResult<Record<string, unknown>>,
): Promise<EditResult<Record<string, unknown>> | undefined> {
  const now = new Date(clock.nowMs());
  const loaded = await loadPlansFile(path, now);
  if (!loaded.ok) {
    console.error(`${path}: cannot edit an invalid plans file:`);
    for (const e of loaded.errors) console.error(`  ${e.path}: ${e.message}`);
    return undefined;
  }
  const result = edit(loaded.snapshot.document, now);
  if (result.ok) await writeFileAtomic(path, renderPlansFile(result.document));
  return result;
}

/** `sluice keys create|revoke --account ID [--key-id KEY] [--plans FILE]`. */
export async function keysCommand(
  args: string[],
  options: { clock: Clock; plansPath: string },
): Promise<number> {
  const [action, ...rest] = args;
  const { values } = parseArgs({
    args: rest,
    options: {
      account: { type: "string" },
      "key-id": { type: "string" },
      plans: { type: "string" },
    },
    strict: true,
  });
  const path = values.plans ?? options.plansPath;
  const account = values.account;
  if (account === undefined || (action !== "create" && action !== "revoke")) {
    console.error("usage: sluice keys create|revoke --account ID [--key-id KEY] [--plans FILE]");
    return 2;
  }
  if (action === "create") {
    const result = await editPlans(path, options.clock, (doc, now) => createKey(doc, account, now));
    if (result === undefined) return 1;
    if (!result.ok) return fail(result.message);
    console.log(`Created key ${String(result.keyId)} for account ${account} (shown once):`);
    console.log(String(result.apiKey));
    return 0;
  }
  const keyId = values["key-id"];
  if (keyId === undefined) {
    console.error("usage: sluice keys revoke --account ID --key-id KEY [--plans FILE]");
    return 2;
  }
  const result = await editPlans(
    path,
    options.clock,
    (doc, now) => revokeKey(doc, account, keyId, now),
  );
  if (result === undefined) return 1;
  if (!result.ok) return fail(result.message);
  console.log(`Revoked key ${keyId} of account ${account}.`);
  return 0;
}

function fail(message: string): number {
  console.error(`sluice: ${message}`);
  return 1;
}
