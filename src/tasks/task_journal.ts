/**
 * @module
 * Durable tasks: an append-only journal of JSON lines under `--data-dir`,
 * with group commit. Every write joins the batch being formed; one writer
 * appends the batch, fsyncs once, and only then resolves every write in it,
 * so a submission is acknowledged only after it is on disk, and a burst of
 * submissions costs one fsync, not one each. Replay keeps the last record per
 * id. When the journal holds far more records than live tasks, it is
 * rewritten (temp file, fsync, rename) with one record per live task.
 *
 * Why not Deno KV: it still needs `--unstable-kv`, and a plain file keeps the
 * data readable with `jq` and the durability argument short.
 */

import type { Task } from "./task.ts";

type JournalRecord = { op: "put"; task: Task } | { op: "del"; id: string };

interface Pending {
  line: string;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/** Options for {@linkcode TaskJournal.open}. */
export interface TaskJournalOptions {
  /** The live tasks, for compaction. */
  liveTasks: () => Iterable<Task>;
  /** Compact once records exceed this and twice the live count. */
  compactAfterRecords?: number;
}

/** The task journal of one data directory. */
export class TaskJournal {
  readonly path: string;
  #file: Deno.FsFile;
  #pending: Pending[] = [];
  #flushing: Promise<void> | undefined;
  #records: number;
  #liveTasks: () => Iterable<Task>;
  #compactAfterRecords: number;
  #closed = false;

  /** Use {@linkcode TaskJournal.open}, which replays the file first. */
  constructor(path: string, file: Deno.FsFile, records: number, options: TaskJournalOptions) {
    this.path = path;
    this.#file = file;
    this.#records = records;
    this.#liveTasks = options.liveTasks;
    this.#compactAfterRecords = options.compactAfterRecords ?? 50_000;
  }

  /**
   * Opens (creating) `dir/tasks.jsonl`, replays it, and returns the journal
   * with the tasks it holds (last record per id wins; a torn last line from a
   * crash is ignored).
   */
  static async open(
    dir: string,
    options: TaskJournalOptions,
  ): Promise<{ journal: TaskJournal; tasks: Task[] }> {
    await Deno.mkdir(dir, { recursive: true });
    const path = `${dir}/tasks.jsonl`;
    const tasks = new Map<string, Task>();
    let records = 0;
    let text = "";
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    for (const line of text.split("\n")) {
      if (line === "") continue;
      let record: JournalRecord;
      try {
        record = JSON.parse(line);
      } catch {
        continue; // a torn final line: its write was never acknowledged
      }
      records++;
      if (record.op === "put") tasks.set(record.task.id, record.task);
      else tasks.delete(record.id);
    }
    if (text !== "" && !text.endsWith("\n")) {
      // Cut the torn tail so the next append starts on a fresh line.
      await Deno.writeTextFile(path, text.slice(0, text.lastIndexOf("\n") + 1));
    }
    const file = await Deno.open(path, { create: true, append: true });
    const journal = new TaskJournal(path, file, records, options);
    return { journal, tasks: [...tasks.values()].sort((a, b) => a.seq - b.seq) };
  }

  /** Persists the task's current state; resolves once it is on disk. */
  put(task: Task): Promise<void> {
    return this.#append({ op: "put", task });
  }

  /** Persists several tasks in one batch. */
  putAll(tasks: readonly Task[]): Promise<void> {
    return Promise.all(tasks.map((task) => this.put(task))).then(() => {});
  }

  /** Records that a task is gone. */
  delete(id: string): Promise<void> {
    return this.#append({ op: "del", id });
  }

  /** Resolves when everything written so far is on disk. */
  async flush(): Promise<void> {
    while (this.#flushing !== undefined) await this.#flushing;
  }

  /** Flushes and closes the file. */
  async close(): Promise<void> {
    await this.flush();
    if (this.#closed) return;
    this.#closed = true;
    this.#file.close();
  }

  #append(record: JournalRecord): Promise<void> {
    if (this.#closed) return Promise.reject(new Error("task journal is closed"));
    return new Promise((resolve, reject) => {
      this.#pending.push({ line: JSON.stringify(record) + "\n", resolve, reject });
      this.#flushing ??= this.#flushLoop();
    });
  }

  async #flushLoop(): Promise<void> {
    // Let the current burst of writes join the batch before the first write.
    await Promise.resolve();
    while (this.#pending.length > 0) {
      const batch = this.#pending;
      this.#pending = [];
      try {
        const bytes = new TextEncoder().encode(batch.map((p) => p.line).join(""));
        let written = 0;
        while (written < bytes.length) written += await this.#file.write(bytes.subarray(written));
        await this.#file.sync();
        this.#records += batch.length;
        for (const p of batch) p.resolve();
      } catch (error) {
        for (const p of batch) p.reject(error);
      }
      try {
        await this.#compactIfDue();
      } catch {
        // Compaction only saves space; until its rename the old file is whole,
        // so keep appending rather than leave this loop (and every later write) stuck.
      }
    }
    this.#flushing = undefined;
  }

  async #compactIfDue(): Promise<void> {
    if (this.#records < this.#compactAfterRecords) return;
    const live = [...this.#liveTasks()];
    if (this.#records < live.length * 2) return;
    const temp = `${this.path}.${crypto.randomUUID()}.tmp`;
    const text = live.map((task) => JSON.stringify({ op: "put", task }) + "\n").join("");
    const out = await Deno.open(temp, { write: true, createNew: true });
    try {
      const bytes = new TextEncoder().encode(text);
      let written = 0;
      while (written < bytes.length) written += await out.write(bytes.subarray(written));
      await out.sync();
    } finally {
      out.close();
    }
    await Deno.rename(temp, this.path);
    this.#file.close();
    this.#file = await Deno.open(this.path, { append: true });
    this.#records = live.length;
  }
}
