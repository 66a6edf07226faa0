/**
 * @module
 * Time as a parameter. Domain code takes `nowMs` or a {@linkcode Clock};
 * only `main.ts` builds the real one, tests pass a fake.
 */

/** A source of the current time in epoch milliseconds. */
export interface Clock {
  nowMs(): number;
}
