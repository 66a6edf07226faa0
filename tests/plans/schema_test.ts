import assert from "node:assert/strict";
import { parsePlansText } from "../../src/plans/plans_file.ts";
import { resolvePlan, validatePlansFile } from "../../src/plans/schema.ts";

const goodHash = `sha256:${"a".repeat(64)}`;
const otherHash = `sha256:${"b".repeat(64)}`;
const now = new Date("2026-01-01T00:00:00Z");

function errorsOf(value: unknown): string[] {
  const result = validatePlansFile(value);
  assert.equal(result.ok, false, "expected a validation failure");
  return result.ok ? [] : result.errors.map((e) => `${e.path}: ${e.message}`);
}

Deno.test("resolvePlan() applies the SPEC defaults for omitted rateLimit and queueLimit", () => {
  const plan = resolvePlan("free", { concurrency: 1 });
  assert.deepEqual(plan.rateLimit, { requests: 500, windowMs: 1000, scope: "account" });
  assert.equal(plan.queueLimit, 100_000);
  assert.equal(plan.shadow, false);
  const custom = resolvePlan("x", { concurrency: 2, rateLimit: { requests: 7, scope: "key" } });
  assert.deepEqual(custom.rateLimit, { requests: 7, windowMs: 1000, scope: "key" });
});

Deno.test("the SPEC §6.1 example file validates", () => {
  const result = validatePlansFile({
    plans: {
      free: { concurrency: 1 },
      starter: {
        concurrency: 50,
        rateLimit: { requests: 500, windowMs: 1000, scope: "account" },
        queueLimit: 100000,
      },
    },
    accounts: {
      acme: {
        plan: "starter",
        keys: [{ id: "key_1", hash: goodHash, createdAt: "2026-01-01T00:00:00Z" }],
        webhookSecret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
      },
    },
  });
  assert.equal(result.ok, true, JSON.stringify(result));
});

Deno.test("an account naming an unknown plan is an error at accounts.<id>.plan", () => {
  const errors = errorsOf({
    plans: { free: { concurrency: 1 } },
    accounts: { acme: { plan: "gold" } },
  });
  assert.deepEqual(errors, ['accounts.acme.plan: unknown plan "gold"']);
});

Deno.test("duplicate key ids and hashes are errors naming the key's path", () => {
  const key = (id: string, hash: string) => ({ id, hash, createdAt: "2026-01-01T00:00:00Z" });
  const errors = errorsOf({
    plans: { free: { concurrency: 1 } },
    accounts: {
      a: { plan: "free", keys: [key("k1", goodHash), key("k1", otherHash)] },
      b: { plan: "free", keys: [key("k9", goodHash)] },
    },
  });
  assert.ok(
    errors.some((e) => e.startsWith('accounts.a.keys.1.id: duplicate key id "k1"')),
    errors.join(),
  );
  assert.ok(
    errors.some((e) => e.startsWith("accounts.b.keys.0.hash: duplicate key hash")),
    errors.join(),
  );
});

Deno.test("non-positive limits are errors naming their path", () => {
  const errors = errorsOf({
    plans: {
      a: { concurrency: 0 },
      b: { concurrency: 1, rateLimit: { requests: -5 } },
      c: { concurrency: 1, queueLimit: 0 },
      d: { concurrency: 1, rateLimit: { windowMs: 1.5 } },
    },
  });
  const paths = errors.map((e) => e.split(":")[0]);
  assert.deepEqual(paths.sort(), [
    "plans.a.concurrency",
    "plans.b.rateLimit.requests",
    "plans.c.queueLimit",
    "plans.d.rateLimit.windowMs",
  ]);
});

Deno.test("unknown fields, bad scopes and malformed hashes are rejected, not ignored", () => {
  const errors = errorsOf({
    plans: { a: { concurrency: 1, concurency: 2, rateLimit: { scope: "planet" } } },
    accounts: {
      x: { plan: "a", keys: [{ id: "k", hash: "md5:abc", createdAt: "2026-01-01T00:00:00Z" }] },
    },
  });
  const paths = errors.map((e) => e.split(":")[0]);
  assert.ok(paths.includes("plans.a"), errors.join("\n"));
  assert.ok(paths.includes("plans.a.rateLimit.scope"), errors.join("\n"));
  assert.ok(paths.includes("accounts.x.keys.0.hash"), errors.join("\n"));
});

Deno.test("invalid JSON is reported as such, with the parser's position", () => {
  const result = parsePlansText('{"plans": {', now);
  assert.equal(result.ok, false);
  if (!result.ok) {
    assert.equal(result.errors[0]?.path, "(root)");
    assert.match(result.errors[0]?.message ?? "", /^invalid JSON/);
  }
});

Deno.test("revoked keys are not live in the snapshot", () => {
  const result = parsePlansText(
    JSON.stringify({
      plans: { free: { concurrency: 1 } },
      accounts: {
        a: {
          plan: "free",
          keys: [
            { id: "live", hash: goodHash, createdAt: "2026-01-01T00:00:00Z" },
            {
              id: "old",
              hash: otherHash,
              createdAt: "2026-01-01T00:00:00Z",
              revokedAt: "2026-02-01T00:00:00Z",
            },
          ],
        },
      },
    }),
    now,
  );
  assert.ok(result.ok);
  if (result.ok) {
    assert.equal(result.snapshot.keysByHash.get(goodHash)?.keyId, "live");
    assert.equal(result.snapshot.keysByHash.has(otherHash), false);
  }
});
