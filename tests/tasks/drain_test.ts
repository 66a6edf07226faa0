/**
 * The drain test (SPEC §5 dispatch): 10,000 tasks across 50 accounts on
 * plans of 1, 2, 5, 10 and 20 slots, through the real dispatcher, journal and
 * a simulator answering in 0-2 ms. Every task completes; at the start of every
 * simulator call no account is over its plan, neither by the semaphore nor by
 * an independent count of calls in flight; every account with enough work
 * uses all its slots; and an account with a 5,000-task backlog does not delay
 * a small batch another account submits after it.
 */

import { seededRandom } from "../_helpers.ts";
import assert from "node:assert/strict";
import type { PlansFile } from "../../src/plans/schema.ts";
import type { TaskInput } from "../../src/tasks/task.ts";
import type { BatchItem } from "../../src/tasks/task_service.ts";
import type { Forwarder } from "../../src/upstream/forwarder.ts";
import { abortableSleep, type Simulator } from "../../src/upstream/simulator.ts";
import { startHarness } from "./_harness.ts";

/** Set to a number printed by a failing run to replay its latencies. */
const FIXED_SEED: number | undefined = undefined;
const TOTAL_TASKS = 10_000;
const BIG_BACKLOG = 5_000;
const SMALL_BATCH = 20;
const SLOT_PLANS = [1, 2, 5, 10, 20];

function items(count: number, random: () => number): BatchItem[] {
  return Array.from({ length: count }, (_, i) => {
    const input: TaskInput = {
      taskType: "CHATGPT",
      payload: { prompt: `task ${i}` },
      priority: 1 + Math.floor(random() * 10),
    };
    return { ok: true, input };
  });
}

Deno.test("10,000 tasks over 50 accounts all complete, never over a plan, and a backlog never delays another account", async () => {
  const seed = FIXED_SEED ?? Math.floor(Math.random() * 2 ** 31);
  const random = seededRandom(seed);
  const plans: PlansFile["plans"] = {};
  for (const slots of SLOT_PLANS) plans[`c${slots}`] = { concurrency: slots };
  const accounts: Record<string, string> = { big: "c2", small: "c2" };
  for (let i = 0; i < 48; i++) accounts[`acct${i}`] = `c${SLOT_PLANS[i % SLOT_PLANS.length]}`;
  const slotsOf = (id: string) => Number(accounts[id]?.slice(1));

  const inFlight = new Map<string, number>();
  const maxInFlight = new Map<string, number>();
  const overPlan: string[] = [];
  let callStarts = 0;

  const h = await startHarness({
    plans,
    accounts,
    // Tiny, random latency: a timer is the upstream here, not a wait in the test.
    sleep: (_ms, signal) => abortableSleep(Math.floor(random() * 3), signal),
    forwarder: (simulator: Simulator): Forwarder => ({
      servesAnyPath: false,
      async forward(request, context) {
        callStarts++;
        const id = context.accountId;
        const now = (inFlight.get(id) ?? 0) + 1;
        inFlight.set(id, now);
        maxInFlight.set(id, Math.max(maxInFlight.get(id) ?? 0, now));
        for (const account of Object.keys(accounts)) {
          const used = h.limiter.slotsInUse(account);
          const running = inFlight.get(account) ?? 0;
          if (used > slotsOf(account) || running > slotsOf(account)) {
            overPlan.push(`${account}: ${used} slots, ${running} running at call ${callStarts}`);
          }
        }
        try {
          return await simulator.forward(request, context);
        } finally {
          inFlight.set(id, (inFlight.get(id) ?? 1) - 1);
        }
      },
    }),
  });
  try {
    const { config, service, store } = h;
    const account = (id: string) => config.current.accounts.get(id) ?? assert.fail(id);
    const submit = async (id: string, count: number) => {
      for (let done = 0; done < count; done += 500) {
        const outcome = await service.submitBatch(
          account(id),
          items(Math.min(500, count - done), random),
        );
        assert.ok(outcome.ok && outcome.results.every((r) => r.ok), `seed ${seed}`);
      }
    };

    const started = performance.now();
    await submit("big", BIG_BACKLOG);
    const others = Object.keys(accounts).filter((id) => id.startsWith("acct"));
    const rest = TOTAL_TASKS - BIG_BACKLOG - SMALL_BATCH;
    for (const [i, id] of others.entries()) {
      const count = Math.floor(rest / others.length) + (i < rest % others.length ? 1 : 0);
      await submit(id, count);
    }
    // The small batch comes last, behind everyone's work, the big backlog's most of all.
    await submit("small", SMALL_BATCH);
    assert.equal(store.size, TOTAL_TASKS);

    await h.settled(60_000);
    const elapsedMs = performance.now() - started;

    assert.deepEqual(overPlan, [], `seed ${seed}`);
    assert.equal(store.count("COMPLETED"), TOTAL_TASKS, `seed ${seed}`);
    assert.equal(callStarts, TOTAL_TASKS, "one upstream call per task, no retries");
    for (const id of Object.keys(accounts)) {
      assert.equal(h.limiter.slotsInUse(id), 0, `${id} holds no slot at the end`);
      assert.equal(maxInFlight.get(id), slotsOf(id), `${id} used all its slots (seed ${seed})`);
    }

    // Fairness, by finish order: when small's last task finished, big was far from half done.
    const accountOf = new Map([...store.all()].map((t) => [t.id, t.accountId]));
    const order = store.finishedIds.map((id) => accountOf.get(id));
    const smallDoneAt = order.lastIndexOf("small");
    const bigDoneBefore = order.slice(0, smallDoneAt).filter((a) => a === "big").length;
    assert.ok(
      bigDoneBefore < BIG_BACKLOG / 2,
      `small finished after ${bigDoneBefore} of big's ${BIG_BACKLOG} (seed ${seed})`,
    );
    console.log(
      `drained ${TOTAL_TASKS} tasks in ${Math.round(elapsedMs)} ms; small done after ` +
        `${bigDoneBefore} of big's tasks (seed ${seed})`,
    );
  } finally {
    await h.close();
  }
});
