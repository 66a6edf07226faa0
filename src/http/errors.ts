/**
 * @module
 * The one error envelope. Anything that is not a success becomes an
 * {@linkcode HttpError} (status, code, message, details, extra headers) and
 * is rendered by {@linkcode errorResponse} alone, so every route answers
 * errors in exactly the same shape.
 */

import { HTTPException } from "hono/http-exception";
import { CapacityError } from "../limits/limiter.ts";

/** The error codes of SPEC §3. */
export type ErrorCode =
  | "VALIDATION_ERROR"
  | "MISSING_API_KEY"
  | "INVALID_API_KEY_FORMAT"
  | "INVALID_OR_EXPIRED_API_KEY"
  | "CONFLICT"
  | "RESOURCE_NOT_FOUND"
  | "METHOD_NOT_ALLOWED"
  | "RESOURCE_ALREADY_EXISTS"
  | "PAYLOAD_TOO_LARGE"
  | "UNSUPPORTED_MEDIA_TYPE"
  | "RATE_LIMIT_EXCEEDED"
  | "CONCURRENCY_LIMIT_EXCEEDED"
  | "QUEUE_LIMIT_EXCEEDED"
  | "INTERNAL_SERVER_ERROR"
  | "UPSTREAM_ERROR"
  | "UPSTREAM_TIMEOUT"
  | "SERVICE_UNAVAILABLE";

/** Options for {@linkcode HttpError}. */
export interface HttpErrorOptions {
  details?: Record<string, unknown> | undefined;
  headers?: Record<string, string>;
  cause?: unknown;
}

/** A failure with everything needed to answer it. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  readonly headers: Record<string, string>;

  constructor(status: number, code: ErrorCode, message: string, options: HttpErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = "HttpError";
    this.status = status;
    this.code = code;
    this.details = options.details;
    this.headers = options.headers ?? {};
  }
}

/** The JSON body of every error. */
export interface ErrorBody {
  success: false;
  error: {
    code: ErrorCode;
    message: string;
    details?: Record<string, unknown>;
    timestamp: string;
  };
}

/** Renders the envelope for `error` at `now`. */
export function errorBody(error: HttpError, now: Date): ErrorBody {
  return {
    success: false,
    error: {
      code: error.code,
      message: error.message,
      ...(error.details === undefined ? {} : { details: error.details }),
      timestamp: now.toISOString(),
    },
  };
}

/** Maps anything thrown to an {@linkcode HttpError}; unknown errors become a 500. */
export function toHttpError(error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof CapacityError) {
    return new HttpError(503, "SERVICE_UNAVAILABLE", "limiter capacity exhausted; try again", {
      headers: { "retry-after": "1" },
      cause: error,
    });
  }
  if (error instanceof HTTPException && error.status === 415) {
    // @hono/zod-openapi's media-type gate: bad input like any other (SPEC §3), so 400.
    return new HttpError(400, "VALIDATION_ERROR", "the request body must be application/json", {
      details: { fields: [{ path: "content-type", message: "expected application/json" }] },
      cause: error,
    });
  }
  if (error instanceof HTTPException && error.status < 500) {
    // Raised inside hono itself, e.g. a malformed JSON body in a validator.
    return new HttpError(
      error.status,
      error.status === 413 ? "PAYLOAD_TOO_LARGE" : "VALIDATION_ERROR",
      error.message || "bad request",
      { cause: error },
    );
  }
  return new HttpError(500, "INTERNAL_SERVER_ERROR", "internal error", { cause: error });
}

/** A `Response` carrying the envelope for `error`. */
export function errorResponse(error: HttpError, now: Date): Response {
  const headers = new Headers(error.headers);
  headers.set("content-type", "application/json; charset=utf-8");
  return new Response(JSON.stringify(errorBody(error, now)), { status: error.status, headers });
}
