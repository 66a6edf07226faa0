/**
 * A plans file in a temp dir with its live config, a watcher (not started
 * unless asked) and the writer: the setup the plans, writer and admin tests
 * share.
 */

import { loadPlansFile, renderPlansFile } from "../../src/plans/plans_file.ts";
import { PlansWatcher, type PlansWatcherOptions } from "../../src/plans/plans_watcher.ts";
import { PlansWriter } from "../../src/plans/plans_writer.ts";
import type { PlansFile } from "../../src/plans/schema.ts";
import { ConfigStore } from "../../src/plans/snapshot.ts";
import { FakeClock } from "../_helpers.ts";

/** What {@linkcode plansFixture} sets up. */
export interface PlansFixture {
  dir: string;
  path: string;
  clock: FakeClock;
  config: ConfigStore;
  watcher: PlansWatcher;
  writer: PlansWriter;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Writes `document` to a temp plans file and builds config, watcher and writer on it. */
export async function plansFixture(
  document: PlansFile,
  options: { watcher?: Omit<PlansWatcherOptions, "config" | "clock">; start?: boolean } = {},
): Promise<PlansFixture> {
  const dir = await Deno.makeTempDir({ prefix: "sluice_plans_" });
  const path = `${dir}/plans.json`;
  const text = renderPlansFile(document);
  await Deno.writeTextFile(path, text);
  const clock = new FakeClock();
  const loaded = await loadPlansFile(path, new Date(clock.nowMs()));
  if (!loaded.ok) throw new Error(`bad test document: ${JSON.stringify(loaded.errors)}`);
  const config = new ConfigStore(loaded.snapshot);
  const watcher = new PlansWatcher(path, { ...options.watcher, config, clock });
  watcher.markLive(text);
  if (options.start === true) await watcher.start();
  const writer = new PlansWriter(path, { config, clock, watcher });
  return {
    dir,
    path,
    clock,
    config,
    watcher,
    writer,
    async [Symbol.asyncDispose]() {
      await watcher.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
