/**
 * Helper process for `torn_write_test.ts`: writes two large, valid plans
 * documents to the file named by its first argument, alternately and for
 * ever, with `writeFileAtomic`, until it is killed. Prints "writing" once it
 * has started and "wrote N" after each completed write, so the test can kill
 * it after a number of writes instead of after a blind sleep.
 *
 *   deno run -A tests/plans/_write_forever.ts PATH
 */

import { hashApiKey } from "../../src/plans/api_key.ts";
import { renderPlansFile, writeFileAtomic } from "../../src/plans/plans_file.ts";
import type { PlansFile } from "../../src/plans/schema.ts";

/** Accounts in each document: enough that one write takes many syscalls. */
export const ACCOUNTS = 1500;

/** The text of document `variant` (0 or 1); both are valid and differ everywhere. */
export function bigPlansText(variant: 0 | 1): string {
  const document: PlansFile = {
    plans: {
      free: { concurrency: 1 },
      pro: { concurrency: 10 + variant, rateLimit: { requests: 500 + variant, windowMs: 1000 } },
    },
    accounts: {},
  };
  const accounts: NonNullable<PlansFile["accounts"]> = {};
  for (let i = 0; i < ACCOUNTS; i++) {
    accounts[`acct_${variant}_${i}`] = {
      plan: i % 2 === 0 ? "free" : "pro",
      keys: [{
        id: `key_${i}`,
        hash: hashApiKey(`sk_torn_${variant}_${i}_0123456789abcdef`),
        createdAt: "2026-01-01T00:00:00Z",
      }],
    };
  }
  document.accounts = accounts;
  return renderPlansFile(document);
}

if (import.meta.main) {
  const path = Deno.args[0];
  if (path === undefined) throw new Error("usage: _write_forever.ts PATH");
  const texts = [bigPlansText(0), bigPlansText(1)] as const;
  console.log("writing");
  for (let i = 1;; i++) {
    await writeFileAtomic(path, texts[i % 2] ?? texts[0]);
    console.log(`wrote ${i}`);
  }
}
