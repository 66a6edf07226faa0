/**
 * @module
 * The request log, kept off the request path. A request only pushes its
 * record into a bounded ring (O(1), never waits); when the ring is full the
 * record is dropped and counted. A background writer drains the ring in
 * batches, appends JSON lines under `<data-dir>/logs/`, rotates by size, and
 * hands each batch to subscribers (the dashboard's live tail).
 */

/** How a request fared against the limits. */
export type LimitDecision = "admitted" | "rate" | "concurrency" | "shadow" | "auth" | "none";

/** One line of the request log. */
export interface RequestRecord {
  /** Epoch ms; written out as ISO-8601 `time`. */
  timeMs: number;
  requestId: string;
  accountId: string | null;
  keyId: string | null;
  plan: string | null;
  method: string;
  path: string;
  status: number;
  latencyMs: number;
  decision: LimitDecision;
}

/** Options for {@linkcode RequestLog}. */
export interface RequestLogOptions {
  /** Records the ring holds before dropping. */
  capacity?: number;
  /** Directory for `requests.log` (no file is written when absent). */
  dir?: string | undefined;
  /** Rotate once the file exceeds this many bytes. */
  maxFileBytes?: number;
  /** Rotated files kept (`requests.log.1` … `.N`). */
  keepFiles?: number;
  /** Most records written per batch. */
  batchSize?: number;
}

/** A bounded ring of request records with a background writer. */
export class RequestLog {
  #ring: (RequestRecord | undefined)[];
  #head = 0;
  #size = 0;
  #dropped = 0;
  #written = 0;
  #dir: string | undefined;
  #maxFileBytes: number;
  #keepFiles: number;
  #batchSize: number;
  #fileBytes = -1;
  #subscribers = new Set<(batch: readonly RequestRecord[]) => void>();
  #draining: Promise<void> | undefined;

  constructor(options: RequestLogOptions = {}) {
    const {
      capacity = 65_536,
      dir,
      maxFileBytes = 64 * 1024 * 1024,
      keepFiles = 5,
      batchSize = 64,
    } = options;
    this.#ring = new Array(capacity);
    this.#dir = dir;
    this.#maxFileBytes = maxFileBytes;
    this.#keepFiles = keepFiles;
    this.#batchSize = batchSize;
  }

  /** Records dropped because the ring was full. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Records handed to the file and subscribers so far. */
  get written(): number {
    return this.#written;
  }

  /** Records waiting in the ring. */
  get pending(): number {
    return this.#size;
  }

  /** Adds a record, or drops it (and counts) when the ring is full. Never waits. */
  push(record: RequestRecord): void {
    const capacity = this.#ring.length;
    if (this.#size === capacity) {
      this.#dropped++;
      return;
    }
    this.#ring[(this.#head + this.#size) % capacity] = record;
    this.#size++;
  }

  /** Adds records dropped elsewhere (a worker isolate's batch overflowed) to the count. */
  countDropped(count: number): void {
    this.#dropped += count;
  }

  /** Calls `listener` with every written batch; returns the unsubscribe function. */
  subscribe(listener: (batch: readonly RequestRecord[]) => void): () => void {
    this.#subscribers.add(listener);
    return () => this.#subscribers.delete(listener);
  }

  /** Writes out what is in the ring now (one drain at a time). */
  drain(): Promise<void> {
    this.#draining ??= this.#drainAll().finally(() => this.#draining = undefined);
    return this.#draining;
  }

  async #drainAll(): Promise<void> {
    while (this.#size > 0) {
      const batch = this.#take(this.#batchSize);
      this.#written += batch.length;
      for (const listener of this.#subscribers) listener(batch);
      // Each append is awaited I/O, so requests run between the small batches.
      if (this.#dir !== undefined) await this.#append(this.#dir, batch);
    }
  }

  #take(max: number): RequestRecord[] {
    const capacity = this.#ring.length;
    const count = Math.min(max, this.#size);
    const batch: RequestRecord[] = new Array(count);
    for (let i = 0; i < count; i++) {
      const at = (this.#head + i) % capacity;
      const record = this.#ring[at];
      if (record !== undefined) batch[i] = record;
      this.#ring[at] = undefined;
    }
    this.#head = (this.#head + count) % capacity;
    this.#size -= count;
    return batch;
  }

  async #append(dir: string, batch: readonly RequestRecord[]): Promise<void> {
    const path = `${dir}/requests.log`;
    if (this.#fileBytes < 0) {
      await Deno.mkdir(dir, { recursive: true });
      this.#fileBytes = await Deno.stat(path).then((s) => s.size, () => 0);
    }
    const bytes = new TextEncoder().encode(batch.map(recordLine).join("\n") + "\n");
    if (this.#fileBytes > 0 && this.#fileBytes + bytes.length > this.#maxFileBytes) {
      await this.#rotate(path);
    }
    await Deno.writeFile(path, bytes, { append: true, create: true });
    this.#fileBytes += bytes.length;
  }

  async #rotate(path: string): Promise<void> {
    for (let n = this.#keepFiles - 1; n >= 1; n--) {
      await Deno.rename(`${path}.${n}`, `${path}.${n + 1}`).catch(() => {});
    }
    if (this.#keepFiles >= 1) await Deno.rename(path, `${path}.1`).catch(() => {});
    else await Deno.remove(path).catch(() => {});
    await Deno.remove(`${path}.${this.#keepFiles + 1}`).catch(() => {});
    this.#fileBytes = 0;
  }
}

/** One record as a JSON line, with `time` as ISO-8601. */
export function recordLine(r: RequestRecord): string {
  return `{"time":"${new Date(r.timeMs).toISOString()}","requestId":${
    JSON.stringify(r.requestId)
  },` +
    `"accountId":${JSON.stringify(r.accountId)},"keyId":${JSON.stringify(r.keyId)},` +
    `"plan":${JSON.stringify(r.plan)},` +
    `"method":${JSON.stringify(r.method)},"path":${JSON.stringify(r.path)},"status":${r.status},` +
    `"latencyMs":${r.latencyMs},"decision":"${r.decision}"}`;
}
