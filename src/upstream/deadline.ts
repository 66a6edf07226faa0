/**
 * @module
 * One upstream exchange's deadline and cancellation: its signal aborts when
 * the client goes away or `timeoutMs` passes, whichever is first. One timer
 * per exchange, dropped with the client listener by {@linkcode Deadline.end}
 * as soon as the exchange is over (`AbortSignal.timeout()` would keep every
 * request's timer pending for the whole timeout).
 */

/** The deadline of one exchange. */
export class Deadline {
  readonly #controller = new AbortController();
  readonly #timer: ReturnType<typeof setTimeout>;
  readonly #client: AbortSignal;
  #timedOut = false;
  #onTimeout: (() => void) | undefined;
  readonly #onClientGone = () => {
    this.#controller.abort(new DOMException("client went away", "AbortError"));
  };

  constructor(timeoutMs: number, client: AbortSignal) {
    this.#client = client;
    this.#timer = setTimeout(() => {
      this.#timedOut = true;
      this.#controller.abort(
        new DOMException(`upstream did not answer within ${timeoutMs} ms`, "TimeoutError"),
      );
      this.#onTimeout?.();
    }, timeoutMs);
    if (client.aborted) this.#onClientGone();
    else client.addEventListener("abort", this.#onClientGone, { once: true });
  }

  /** Aborts at the deadline or when the client goes away. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Whether the deadline (not the client) ended the exchange. */
  get timedOut(): boolean {
    return this.#timedOut;
  }

  /** Runs `callback` when the deadline passes (one callback; the latest wins). */
  onTimeout(callback: () => void): void {
    this.#onTimeout = callback;
  }

  /** The exchange is over: drop the timer and the client listener. */
  end(): void {
    clearTimeout(this.#timer);
    this.#client.removeEventListener("abort", this.#onClientGone);
  }
}
