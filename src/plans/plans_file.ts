/**
 * @module
 * Reading, creating and writing the plans file. Reads parse and validate the
 * whole file and return a value (never throw for a bad file); writes are
 * atomic: a temp file in the same directory, fsync, rename over the target,
 * fsync the directory, so no reader or crash ever sees half a file.
 */

import { generateApiKey, generateId, generateWebhookSecret, hashApiKey } from "./api_key.ts";
import type { PlansFile } from "./schema.ts";
import { buildSnapshot, type SnapshotResult } from "./snapshot.ts";

/** The standard plans a new file starts with (slots per SPEC §2.2). */
export const STANDARD_PLANS: PlansFile["plans"] = {
  free: { concurrency: 1 },
  lite: { concurrency: 10 },
  hobby: { concurrency: 20 },
  starter: { concurrency: 50 },
  growth: { concurrency: 75 },
  business: { concurrency: 100 },
};

/** Reads and validates the plans file at `path`; `now` stamps the load. */
export async function loadPlansFile(path: string, now: Date): Promise<SnapshotResult> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    return { ok: false, errors: [{ path: "(file)", message: describeIoError(error) }] };
  }
  return parsePlansText(text, now);
}

/** Parses and validates the text of a plans file. */
export function parsePlansText(text: string, now: Date): SnapshotResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return { ok: false, errors: [{ path: "(root)", message: `invalid JSON: ${message}` }] };
  }
  return buildSnapshot(value, now);
}

/** A new plans document with the standard plans and one demo account. */
export function demoPlansFile(now: Date): { document: PlansFile; apiKey: string } {
  const apiKey = generateApiKey();
  const document: PlansFile = {
    plans: structuredClone(STANDARD_PLANS),
    accounts: {
      demo: {
        plan: "lite",
        keys: [{ id: generateId("key"), hash: hashApiKey(apiKey), createdAt: now.toISOString() }],
        webhookSecret: generateWebhookSecret(),
      },
    },
  };
  return { document, apiKey };
}

/** The text written for a document: stable two-space JSON with a final newline. */
export function renderPlansFile(document: PlansFile): string {
  return JSON.stringify(document, null, 2) + "\n";
}

/**
 * Writes `text` to `path` atomically: temp file, fsync, rename, fsync of the
 * directory. A crash at any point leaves the old file or the new one.
 */
export async function writeFileAtomic(path: string, text: string): Promise<void> {
  const dir = parentDir(path);
  const temp = `${dir}/.${baseName(path)}.${crypto.randomUUID()}.tmp`;
  const file = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
  try {
    const bytes = new TextEncoder().encode(text);
    let written = 0;
    while (written < bytes.length) written += await file.write(bytes.subarray(written));
    await file.sync();
  } finally {
    file.close();
  }
  try {
    await Deno.rename(temp, path);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
  await syncDir(dir);
}

/** The directory part of `path` (`.` for a bare name). */
export function parentDir(path: string): string {
  const at = path.lastIndexOf("/");
  if (at < 0) return ".";
  return at === 0 ? "/" : path.slice(0, at);
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

async function syncDir(dir: string): Promise<void> {
  let handle: Deno.FsFile | undefined;
  try {
    handle = await Deno.open(dir, { read: true });
    await handle.sync();
  } catch {
    // Some file systems refuse fsync on a directory; the rename is still atomic.
  } finally {
    handle?.close();
  }
}

function describeIoError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "file not found";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  return error instanceof Error ? error.message : String(error);
}

/** What {@linkcode ensurePlansFile} did. */
export type EnsureResult = { created: false } | { created: true; apiKey: string };

/**
 * Creates the plans file with the standard plans and a demo account when it
 * does not exist; never overwrites one that does.
 */
export async function ensurePlansFile(path: string, now: Date): Promise<EnsureResult> {
  try {
    await Deno.stat(path);
    return { created: false };
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  const { document, apiKey } = demoPlansFile(now);
  await Deno.mkdir(parentDir(path), { recursive: true });
  await writeFileAtomic(path, renderPlansFile(document));
  return { created: true, apiKey };
}
