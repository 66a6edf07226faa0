/**
 * @module
 * Hot reload of hand edits. Watches the plans file's parent directory (an
 * editor's save-by-rename replaces the file, which would blind a watch on the
 * file itself), debounces bursts of events, and also stats the file on a slow
 * timer as a safety net for file systems where watching fails. Each change:
 * read the whole file, validate, build a new snapshot, swap the one reference.
 * An invalid file leaves the last good snapshot live and records the error.
 * Content already live (for example the gateway's own atomic write) is
 * recognised by hash and not applied twice.
 */

import { createHash } from "node:crypto";
import type { Clock } from "../limits/clock.ts";
import type { FieldError } from "./schema.ts";
import { parentDir, parsePlansText } from "./plans_file.ts";
import type { ConfigStore } from "./snapshot.ts";

/** What one reload attempt did. */
export type ReloadOutcome =
  | { result: "applied"; version: string }
  | { result: "unchanged" }
  | { result: "invalid"; errors: FieldError[] };

/** Options for {@linkcode PlansWatcher}. */
export interface PlansWatcherOptions {
  config: ConfigStore;
  clock: Clock;
  /** Quiet time after the last event before reading the file. */
  debounceMs?: number;
  /** Interval of the stat poll that backs up (or replaces) watching. */
  pollMs?: number;
  /** Called after every attempt that was not "unchanged". */
  onReload?: (outcome: ReloadOutcome, source: string) => void;
}

/** SHA-256 of a file's text, to tell contents apart. */
export function contentHash(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Keeps the live config in step with the plans file on disk. */
export class PlansWatcher {
  readonly path: string;
  #config: ConfigStore;
  #clock: Clock;
  #debounceMs: number;
  #pollMs: number;
  #onReload: (outcome: ReloadOutcome, source: string) => void;
  #liveHash: string | undefined;
  /** The last rejected content and why, so asking again gives the same answer. */
  #rejected: { hash: string; errors: FieldError[] } | undefined;
  #lastStat = "";
  #debounce: ReturnType<typeof setTimeout> | undefined;
  #poll: ReturnType<typeof setInterval> | undefined;
  #fsWatcher: Deno.FsWatcher | undefined;
  #watchLoop: Promise<void> | undefined;
  #reloading: Promise<ReloadOutcome> = Promise.resolve({ result: "unchanged" });
  #counts = { applied: 0, invalid: 0 };

  constructor(path: string, options: PlansWatcherOptions) {
    const { config, clock, debounceMs = 100, pollMs = 1000, onReload = () => {} } = options;
    this.path = path;
    this.#config = config;
    this.#clock = clock;
    this.#debounceMs = debounceMs;
    this.#pollMs = pollMs;
    this.#onReload = onReload;
  }

  /** Reload attempts so far, by result. */
  get counts(): { applied: number; invalid: number } {
    return { ...this.#counts };
  }

  /** Records `text` as the live content, so a watch event for it is a no-op. */
  markLive(text: string): void {
    this.#liveHash = contentHash(text);
    this.#rejected = undefined;
  }

  /** Starts watching; safe to call once. */
  async start(): Promise<void> {
    this.#lastStat = await this.#statKey();
    const dir = parentDir(this.path);
    const name = this.path.slice(this.path.lastIndexOf("/") + 1);
    try {
      this.#fsWatcher = Deno.watchFs(dir, { recursive: false });
      const watcher = this.#fsWatcher;
      this.#watchLoop = (async () => {
        try {
          for await (const event of watcher) {
            if (event.paths.some((p) => p.slice(p.lastIndexOf("/") + 1) === name)) this.#schedule();
          }
        } catch {
          // The watch died (directory removed, fs limits): the poll below carries on.
        }
      })();
    } catch {
      this.#fsWatcher = undefined; // watching is unavailable here: the poll is all we have
    }
    this.#poll = setInterval(() => void this.#pollOnce(), this.#pollMs);
  }

  /** Stops watching and polling; waits for a reload in progress. */
  async stop(): Promise<void> {
    if (this.#poll !== undefined) clearInterval(this.#poll);
    if (this.#debounce !== undefined) clearTimeout(this.#debounce);
    this.#poll = undefined;
    this.#debounce = undefined;
    this.#fsWatcher?.close();
    await this.#watchLoop;
    await this.#reloading;
  }

  /** Reads and applies the file now (serialised with other reloads). */
  reloadNow(source: string): Promise<ReloadOutcome> {
    this.#reloading = this.#reloading.then(() => this.#reload(source), () => this.#reload(source));
    return this.#reloading;
  }

  #schedule(): void {
    if (this.#debounce !== undefined) clearTimeout(this.#debounce);
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      void this.reloadNow("file");
    }, this.#debounceMs);
  }

  async #pollOnce(): Promise<void> {
    const key = await this.#statKey();
    if (key !== this.#lastStat) {
      this.#lastStat = key;
      this.#schedule();
    }
  }

  async #statKey(): Promise<string> {
    try {
      const info = await Deno.stat(this.path);
      return `${info.ino}:${info.size}:${info.mtime?.getTime()}`;
    } catch {
      return "missing";
    }
  }

  async #reload(source: string): Promise<ReloadOutcome> {
    let text: string;
    try {
      text = await Deno.readTextFile(this.path);
    } catch (error) {
      const message = error instanceof Deno.errors.NotFound ? "file not found" : String(error);
      return this.#reject("missing", [{ path: "(file)", message }], source);
    }
    const hash = contentHash(text);
    if (hash === this.#liveHash && !this.#config.lastReload.ok) {
      // The file went back to the live content: the earlier error no longer stands.
      this.#config.replace(this.#config.current, source);
      const outcome: ReloadOutcome = { result: "applied", version: this.#config.current.version };
      this.#onReload(outcome, source);
      return outcome;
    }
    if (hash === this.#liveHash) return { result: "unchanged" };
    // Already rejected and reported once: still invalid (an admin reload must
    // say so), but not logged or counted again.
    if (hash === this.#rejected?.hash) return { result: "invalid", errors: this.#rejected.errors };
    const built = parsePlansText(text, new Date(this.#clock.nowMs()));
    if (!built.ok) return this.#reject(hash, built.errors, source);
    this.#liveHash = hash;
    this.#rejected = undefined;
    await this.#config.publish(built.snapshot, source);
    this.#counts.applied++;
    const outcome: ReloadOutcome = { result: "applied", version: built.snapshot.version };
    this.#onReload(outcome, source);
    return outcome;
  }

  #reject(hash: string, errors: FieldError[], source: string): ReloadOutcome {
    this.#rejected = { hash, errors };
    this.#config.reject(errors, new Date(this.#clock.nowMs()), source);
    this.#counts.invalid++;
    const outcome: ReloadOutcome = { result: "invalid", errors };
    this.#onReload(outcome, source);
    return outcome;
  }
}
