/**
 * @module
 * The one writer of the plans file. Admin changes queue here and run one at
 * a time: read the file on disk (so a valid hand edit made meanwhile is not
 * lost), apply the change to that document, validate the result as a whole,
 * write it atomically, mark it live for the watcher, and swap the snapshot so
 * the change applies to the very next request.
 */

import type { Clock } from "../limits/clock.ts";
import type { EditResult } from "./key_admin.ts";
import { parsePlansText, renderPlansFile, writeFileAtomic } from "./plans_file.ts";
import type { PlansWatcher } from "./plans_watcher.ts";
import type { FieldError, PlansFile } from "./schema.ts";
import { buildSnapshot, type ConfigStore } from "./snapshot.ts";

/** A change that was refused because its result would be an invalid file. */
export interface InvalidEdit {
  ok: false;
  status: 400;
  message: string;
  errors: FieldError[];
}

/** Options for {@linkcode PlansWriter}. */
export interface PlansWriterOptions {
  config: ConfigStore;
  clock: Clock;
  watcher?: PlansWatcher;
}

/** Serialised, atomic, validated writes of the plans file. */
export class PlansWriter {
  readonly path: string;
  #config: ConfigStore;
  #clock: Clock;
  #watcher: PlansWatcher | undefined;
  #tail: Promise<unknown> = Promise.resolve();

  constructor(path: string, options: PlansWriterOptions) {
    this.path = path;
    this.#config = options.config;
    this.#clock = options.clock;
    this.#watcher = options.watcher;
  }

  /** Applies `edit` to the current document and writes the result, in turn. */
  update<T extends object>(
    edit: (document: PlansFile, now: Date) => EditResult<T>,
  ): Promise<EditResult<T> | InvalidEdit> {
    const run = () => this.#apply(edit);
    const next = this.#tail.then(run, run);
    this.#tail = next.catch(() => {});
    return next;
  }

  async #apply<T extends object>(
    edit: (document: PlansFile, now: Date) => EditResult<T>,
  ): Promise<EditResult<T> | InvalidEdit> {
    const now = new Date(this.#clock.nowMs());
    const base = await this.#baseDocument(now);
    const result = edit(base, now);
    if (!result.ok) return result;
    const built = buildSnapshot(result.document, now);
    if (!built.ok) {
      return {
        ok: false,
        status: 400,
        message: "the change would make the plans file invalid",
        errors: built.errors,
      };
    }
    const text = renderPlansFile(result.document);
    this.#watcher?.markLive(text);
    await writeFileAtomic(this.path, text);
    await this.#config.publish(built.snapshot, "admin");
    return result;
  }

  /** The file on disk if it is valid, else the live document. */
  async #baseDocument(now: Date): Promise<PlansFile> {
    try {
      const parsed = parsePlansText(await Deno.readTextFile(this.path), now);
      if (parsed.ok) return parsed.snapshot.document;
    } catch {
      // Missing or unreadable: the live config is the truth to build on.
    }
    return this.#config.current.document;
  }
}
