/**
 * @module
 * What answers a `/v1/*` call behind the gateway: a real upstream over HTTP
 * (`proxy.ts`) or the built-in simulator (`simulator.ts`). Both take the
 * incoming request and who is calling, and return the response to stream
 * back; both fail with an `HttpError` (502, 504, 404) the error handler renders.
 */

/** Who is calling, for the headers the gateway adds. */
export interface ForwardContext {
  accountId: string;
  planName: string;
  requestId: string;
  clientAddress: string | undefined;
  /** Fires when the client goes away before the response is ready. */
  signal: AbortSignal;
}

/** Answers one forwarded request. */
export interface Forwarder {
  /** Whether this forwarder serves arbitrary `/v1/*` paths (a real upstream does). */
  readonly servesAnyPath: boolean;
  forward(request: Request, context: ForwardContext): Promise<Response>;
}
