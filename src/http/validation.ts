/**
 * @module
 * The one validation hook for zod-validated routes: a failed parse becomes
 * `400 VALIDATION_ERROR` listing each failing field with its path.
 */

import type { z } from "zod";
import { HttpError } from "./errors.ts";

/** Throws the 400 envelope for a failed parse; passes a successful one. */
export function validationHook(
  result: { success: true } | { success: false; error: z.ZodError },
): void {
  if (result.success) return;
  throw new HttpError(400, "VALIDATION_ERROR", "request validation failed", {
    details: {
      fields: result.error.issues.map((issue) => ({
        path: issue.path.length === 0 ? "(body)" : issue.path.map(String).join("."),
        message: issue.message,
      })),
    },
  });
}
