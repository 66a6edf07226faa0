/**
 * @module
 * A table of sliding-window rate counters in one `SharedArrayBuffer`, lock-free
 * (compare-and-swap only), so several isolates can admit against the same
 * counters exactly.
 *
 * How it works: a window of `windowMs` is cut into {@linkcode BUCKETS_PER_WINDOW}
 * buckets. Each entry keeps one "current" word (bucket tag + count) that every
 * admission CASes, a ring of archived bucket counts, and a ring of the latest
 * admission offset inside each bucket. Admission counts every bucket that can
 * hold a request younger than `windowMs`, and drops the oldest bucket only when
 * its latest admission is provably out of the window. That never over-admits
 * (the counted span always covers the rolling window) and, with 63 buckets,
 * over-counts by at most 1/63 of a window, which is why an even pace at 97% of
 * the limit is never rejected. The sum of the archived buckets is cached per
 * bucket, so an admission is O(1); advancing to a new bucket is O(ring).
 *
 * Bucket tags are only 12 bits, so they repeat. After a long silence the
 * current word's tag can alias a recent one, so each entry also keeps the time
 * of its latest admission; once that is `SILENT_WINDOWS` (16) windows old
 * (long after every count it holds has left the window, short of the 2048
 * buckets where lags turn ambiguous), the entry starts afresh at the current
 * bucket.
 * And a ring slot's tag repeats every 64 × 4095 buckets, so whenever the
 * current word moves to a bucket, the slots of that bucket and of those it
 * skipped are cleared of counts that merely carry their tag.
 */

/** Buckets a window is divided into; the ring holds one more (the current one). */
export const BUCKETS_PER_WINDOW = 63;
const RING = 64;
const RING_MASK = RING - 1;
const TAG_BITS = 12;
const TAG_MASK = (1 << TAG_BITS) - 1;
const VALUE_BITS = 20;
const VALUE_MASK = (1 << VALUE_BITS) - 1;
/** Largest `requests` a window may allow (20 bits of count). */
export const MAX_REQUESTS = VALUE_MASK - 1;
/** Largest `windowMs` (bucket offsets are kept in 20 bits). */
export const MAX_WINDOW_MS = 3_600_000;

// Word offsets inside one entry.
const CURRENT = 0; // tag | count of the current bucket
const OLDER_SUM = 1; // tag | sum of archived buckets inside the window, for that tag
const LIMIT = 2; // requests per window
const WINDOW_MS = 3; // window length, ms
const LAST_SEEN_S = 4; // seconds since table epoch of the last admission (for reclaim)
const LAST_MS = 5; // ms of the latest admission as an int32 (wraps), to tell a long silence apart
const RING_COUNT = 8; // RING words: tag | count of each archived bucket
const RING_LAST = RING_COUNT + RING; // RING words: tag | last admission offset in bucket
/** Int32 words one entry takes. */
export const ENTRY_WORDS = RING_LAST + RING;
/** Bytes one entry takes. */
export const ENTRY_BYTES = ENTRY_WORDS * 4;

const EMPTY_TAG = TAG_MASK; // never equals a live tag after `tagOf` (see below)
const EMPTY_WORD = EMPTY_TAG << VALUE_BITS;

// Isolates' clocks may disagree by this much: a LAST_MS up to this far ahead is kept.
const CLOCK_SKEW_MS = 60_000;
/**
 * Windows without an admission after which an entry starts afresh. Not 1: a
 * caller whose clock read lags another isolate's still needs the counts of its
 * own, slightly earlier window. 16 windows is 1008 buckets, well short of the
 * 2048 where a 12-bit tag lag becomes ambiguous.
 */
const SILENT_WINDOWS = 16;
// LAST_MS differences are exact below 2^31 ms (24.8 days); a silence this long
// by LAST_SEEN_S is longer than any window, whatever LAST_MS says.
const LONG_SILENCE_S = 1_000_000;

/** The outcome of one admission attempt. Denial is a value, not an exception. */
export interface WindowDecision {
  allowed: boolean;
  /** Requests allowed per window. */
  limit: number;
  /** Further requests that would be admitted right now (never negative). */
  remaining: number;
}

function tagOf(bucket: number): number {
  // Tag 4095 is kept for "empty", so tags cycle through 0..4094.
  return bucket % TAG_MASK;
}

function pack(tag: number, value: number): number {
  return (tag << VALUE_BITS) | value;
}

function tagPart(word: number): number {
  return (word >>> VALUE_BITS) & TAG_MASK;
}

/** Distance in buckets from `tag` forward to `bucket`'s tag, modulo the tag cycle. */
function lag(bucket: number, tag: number): number {
  const d = tagOf(bucket) - tag;
  return d < 0 ? d + TAG_MASK : d;
}

/**
 * Sliding-window counters for many keys in one shared buffer.
 *
 * Entries are addressed by index; which key owns which index is the caller's
 * business ({@linkcode ../limits/key_index.ts}). Every method that depends on
 * time takes `nowMs` (milliseconds since the table's epoch), never reads a clock.
 */
export class WindowTable {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  #w: Int32Array;

  constructor(capacity: number, buffer?: SharedArrayBuffer) {
    this.capacity = capacity;
    this.buffer = buffer ?? new SharedArrayBuffer(capacity * ENTRY_BYTES);
    if (this.buffer.byteLength < capacity * ENTRY_BYTES) {
      throw new RangeError("buffer too small for capacity");
    }
    this.#w = new Int32Array(this.buffer);
  }

  /** Resets entry `index` to an empty window with the given limits. */
  init(index: number, requests: number, windowMs: number): void {
    checkLimits(requests, windowMs);
    const base = index * ENTRY_WORDS;
    const w = this.#w;
    for (let i = 0; i < ENTRY_WORDS; i++) Atomics.store(w, base + i, 0);
    Atomics.store(w, base + CURRENT, pack(EMPTY_TAG, 0));
    Atomics.store(w, base + OLDER_SUM, pack(EMPTY_TAG, 0));
    for (let i = 0; i < RING; i++) {
      Atomics.store(w, base + RING_COUNT + i, pack(EMPTY_TAG, 0));
      Atomics.store(w, base + RING_LAST + i, pack(EMPTY_TAG, 0));
    }
    Atomics.store(w, base + LIMIT, requests);
    Atomics.store(w, base + WINDOW_MS, windowMs);
  }

  /** Changes the request limit in place; counts already made are kept. */
  setLimit(index: number, requests: number): void {
    checkLimits(requests, MAX_WINDOW_MS);
    Atomics.store(this.#w, index * ENTRY_WORDS + LIMIT, requests);
  }

  /** Requests per window of entry `index`. */
  limit(index: number): number {
    return Atomics.load(this.#w, index * ENTRY_WORDS + LIMIT);
  }

  /** Window length of entry `index`, ms. */
  windowMs(index: number): number {
    return Atomics.load(this.#w, index * ENTRY_WORDS + WINDOW_MS);
  }

  /** Seconds since the epoch at which entry `index` last admitted a request. */
  lastSeenSeconds(index: number): number {
    return Atomics.load(this.#w, index * ENTRY_WORDS + LAST_SEEN_S);
  }

  /**
   * Admits one request at `nowMs` if the window has room and counts it; a
   * denied request is not counted. Returns the requests still admissible after
   * this one (≥ 0) when admitted, or -1 when denied. Synchronous and
   * allocation-free: this is the hot path.
   */
  tryAdmit(index: number, nowMs: number): number {
    const w = this.#w;
    const base = index * ENTRY_WORDS;
    const limit = Atomics.load(w, base + LIMIT);
    const windowMs = Atomics.load(w, base + WINDOW_MS);
    for (;;) {
      const cur = Atomics.load(w, base + CURRENT);
      const bucket = this.#currentBucket(base, cur, nowMs, windowMs);
      if (bucket < 0) continue; // advanced (by us or another isolate): read again
      const used = this.#used(base, cur, bucket, nowMs, windowMs);
      if (used < 0) continue;
      if (used >= limit) return -1;
      // Before the CAS: whoever sees this admission in CURRENT also sees its time.
      this.#noteAdmissionTime(base, nowMs);
      if (Atomics.compareExchange(w, base + CURRENT, cur, cur + 1) === cur) {
        this.#noteLast(base, bucket, Math.max(0, nowMs - bucketStartMs(bucket, windowMs)));
        return limit - used - 1;
      }
    }
  }

  /** How many requests the window holds at `nowMs` (as admission counts them). */
  used(index: number, nowMs: number): number {
    const w = this.#w;
    const base = index * ENTRY_WORDS;
    const windowMs = Atomics.load(w, base + WINDOW_MS);
    for (;;) {
      const cur = Atomics.load(w, base + CURRENT);
      const bucket = this.#currentBucket(base, cur, nowMs, windowMs);
      if (bucket < 0) continue;
      const used = this.#used(base, cur, bucket, nowMs, windowMs);
      if (used >= 0) return used;
    }
  }

  /** {@linkcode tryAdmit} as a value: whether admitted, the limit and what remains. */
  admit(index: number, nowMs: number): WindowDecision {
    const remaining = this.tryAdmit(index, nowMs);
    return { allowed: remaining >= 0, limit: this.limit(index), remaining: Math.max(0, remaining) };
  }

  /**
   * Milliseconds from `nowMs` until the window would admit `needed` more
   * requests (0 if it already would). Used for `Retry-After` and reset headers;
   * it scans the ring, so it is kept off the admission path.
   */
  msUntilFree(index: number, nowMs: number, needed = 1): number {
    const w = this.#w;
    const base = index * ENTRY_WORDS;
    const limit = Atomics.load(w, base + LIMIT);
    const windowMs = Atomics.load(w, base + WINDOW_MS);
    let excess = this.used(index, nowMs) + needed - limit;
    if (excess <= 0) return 0;
    const cur = Atomics.load(w, base + CURRENT);
    const nowBucket = bucketOf(nowMs, windowMs);
    const curBucket = tagPart(cur) === EMPTY_TAG ? -1 : nowBucket - lag(nowBucket, tagPart(cur));
    // Oldest first: each bucket leaves the window windowMs after its last admission.
    for (let b = nowBucket - BUCKETS_PER_WINDOW; b <= nowBucket; b++) {
      const count = b === curBucket ? cur & VALUE_MASK : this.#archived(base, b);
      if (count === 0) continue;
      const lastWord = Atomics.load(w, base + RING_LAST + (b & RING_MASK));
      const lastKnown = tagPart(lastWord) === tagOf(b);
      const lastMs = lastKnown
        ? bucketStartMs(b, windowMs) + (lastWord & VALUE_MASK)
        : bucketStartMs(b + 1, windowMs) - 1;
      const leavesAtMs = lastMs + windowMs;
      // Already out of the window, so `used` above did not count it (see #used).
      if (lastKnown && leavesAtMs <= nowMs) continue;
      excess -= count;
      if (excess <= 0) return Math.max(1, leavesAtMs - nowMs);
    }
    return windowMs;
  }

  /**
   * Moves the current word to the bucket of `nowMs` if it is behind, archiving
   * the finished bucket first. Returns the bucket the current word now holds,
   * or -1 when the word changed under us and must be read again.
   */
  #currentBucket(base: number, cur: number, nowMs: number, windowMs: number): number {
    const nowBucket = bucketOf(nowMs, windowMs);
    const tag = tagPart(cur);
    if (tag === EMPTY_TAG) {
      const next = pack(tagOf(nowBucket), 0);
      Atomics.compareExchange(this.#w, base + CURRENT, cur, next);
      return -1;
    }
    // After a long silence the tag may have wrapped (even to this very bucket's
    // tag), so the lag below would be a guess; but then nothing counted is in
    // the window, so start afresh at this bucket.
    if (this.#silent(base, nowMs, windowMs)) {
      const fresh = pack(tagOf(nowBucket), 0);
      return this.#startAfresh(base, cur, nowBucket) && cur === fresh ? nowBucket : -1;
    }
    const behind = lag(nowBucket, tag);
    if (behind === 0) return nowBucket;
    // A clock read a moment earlier than another isolate's: use their bucket.
    if (behind > TAG_MASK / 2) return nowBucket + (TAG_MASK - behind);
    const oldBucket = nowBucket - behind;
    const skippedFrom = Math.max(oldBucket + 1, nowBucket - BUCKETS_PER_WINDOW);
    if (!this.#clearAliases(base, cur, skippedFrom, nowBucket)) return -1;
    // Archive before moving on, so whoever sees the new bucket sees the final count.
    this.#archive(base, oldBucket, cur & VALUE_MASK);
    Atomics.compareExchange(this.#w, base + CURRENT, cur, pack(tagOf(nowBucket), 0));
    return -1;
  }

  /** Requests counted at `nowMs` with the current word `cur` of `bucket`; -1 to retry. */
  #used(base: number, cur: number, bucket: number, nowMs: number, windowMs: number): number {
    const w = this.#w;
    const sumWord = Atomics.load(w, base + OLDER_SUM);
    let older: number;
    if (tagPart(sumWord) === tagOf(bucket)) {
      older = sumWord & VALUE_MASK;
    } else {
      // Only computed by one who has seen the current word at `bucket`: by then
      // every older bucket is archived for good, so every writer stores the same sum.
      older = this.#setOlderSum(base, bucket);
    }
    // The oldest counted bucket leaves early once its newest request is out of the window.
    const oldest = bucket - BUCKETS_PER_WINDOW;
    const oldestCount = this.#archived(base, oldest);
    if (oldestCount > 0) {
      const lastWord = Atomics.load(w, base + RING_LAST + (oldest & RING_MASK));
      if (tagPart(lastWord) === tagOf(oldest)) {
        const lastMs = bucketStartMs(oldest, windowMs) + (lastWord & VALUE_MASK);
        if (lastMs <= nowMs - windowMs) older -= oldestCount;
      }
    }
    if (Atomics.load(w, base + CURRENT) !== cur) return -1;
    return older + (cur & VALUE_MASK);
  }

  #archived(base: number, bucket: number): number {
    const word = Atomics.load(this.#w, base + RING_COUNT + (bucket & RING_MASK));
    return tagPart(word) === tagOf(bucket) ? word & VALUE_MASK : 0;
  }

  /** Stores `count` for `bucket`, keeping the larger if another isolate got there first. */
  #archive(base: number, bucket: number, count: number): void {
    const w = this.#w;
    const at = base + RING_COUNT + (bucket & RING_MASK);
    const next = pack(tagOf(bucket), count);
    for (;;) {
      const old = Atomics.load(w, at);
      if (tagPart(old) === tagOf(bucket) && (old & VALUE_MASK) >= count) return;
      if (Atomics.compareExchange(w, at, old, next) === old) return;
    }
  }

  /** Sums the archived buckets that `bucket`'s window covers and caches it. */
  #setOlderSum(base: number, bucket: number): number {
    let sum = 0;
    for (let b = bucket - BUCKETS_PER_WINDOW; b < bucket; b++) sum += this.#archived(base, b);
    Atomics.store(this.#w, base + OLDER_SUM, pack(tagOf(bucket), Math.min(sum, VALUE_MASK)));
    return sum;
  }

  /**
   * Whether entry `base` admitted nothing in the last {@linkcode SILENT_WINDOWS}
   * windows. Reads the times after the caller read CURRENT, and admissions
   * write them before their CAS on CURRENT, so an admission the caller saw is
   * never missed.
   */
  #silent(base: number, nowMs: number, windowMs: number): boolean {
    const w = this.#w;
    // int32 wrap-around difference: negative when another isolate's clock is ahead.
    const sinceMs = ((nowMs | 0) - Atomics.load(w, base + LAST_MS)) | 0;
    if (sinceMs >= SILENT_WINDOWS * windowMs) return true;
    return nowMs >= (Atomics.load(w, base + LAST_SEEN_S) + LONG_SILENCE_S) * 1000;
  }

  /**
   * Empties a silent entry: clears counts that alias the window ending at
   * `nowBucket`, drops the cached sum, then moves CURRENT from `cur` to
   * `nowBucket` with no count. False if CURRENT changed under us.
   */
  #startAfresh(base: number, cur: number, nowBucket: number): boolean {
    const fromBucket = nowBucket - BUCKETS_PER_WINDOW;
    if (!this.#clearAliases(base, cur, fromBucket, nowBucket)) return false;
    Atomics.store(this.#w, base + OLDER_SUM, EMPTY_WORD);
    const fresh = pack(tagOf(nowBucket), 0);
    return Atomics.compareExchange(this.#w, base + CURRENT, cur, fresh) === cur;
  }

  /**
   * Clears the archived counts that carry the tag of a bucket in
   * `fromBucket..toBucket` (at most one ring). The current word has not left
   * those buckets yet, so such a count is from a whole ring × tag period ago.
   * Each is cleared by CAS from the value read while CURRENT still held `cur`,
   * so a count archived after another isolate moved on is never lost. False
   * if CURRENT changed under us.
   */
  #clearAliases(base: number, cur: number, fromBucket: number, toBucket: number): boolean {
    const w = this.#w;
    for (let b = fromBucket; b <= toBucket; b++) {
      const at = base + RING_COUNT + (b & RING_MASK);
      const old = Atomics.load(w, at);
      if (tagPart(old) !== tagOf(b)) continue;
      if (Atomics.load(w, base + CURRENT) !== cur) return false;
      Atomics.compareExchange(w, at, old, EMPTY_WORD);
    }
    return true;
  }

  /** Records an admission at `nowMs`, keeping a slightly later time another isolate wrote. */
  #noteAdmissionTime(base: number, nowMs: number): void {
    const w = this.#w;
    const at = base + LAST_MS;
    const next = nowMs | 0;
    if (Atomics.load(w, at) === next) return; // the hot path: another admission this ms
    const nowS = (nowMs / 1000) | 0;
    if (Atomics.load(w, base + LAST_SEEN_S) !== nowS) Atomics.store(w, base + LAST_SEEN_S, nowS);
    for (;;) {
      const old = Atomics.load(w, at);
      const aheadMs = (old - next) | 0;
      if (aheadMs >= 0 && aheadMs < CLOCK_SKEW_MS) return;
      if (Atomics.compareExchange(w, at, old, next) === old) return;
    }
  }

  #noteLast(base: number, bucket: number, offsetMs: number): void {
    const w = this.#w;
    const at = base + RING_LAST + (bucket & RING_MASK);
    const next = pack(tagOf(bucket), offsetMs);
    for (;;) {
      const old = Atomics.load(w, at);
      if (tagPart(old) === tagOf(bucket) && (old & VALUE_MASK) >= offsetMs) return;
      if (Atomics.compareExchange(w, at, old, next) === old) return;
    }
  }
}

function bucketOf(nowMs: number, windowMs: number): number {
  return Math.floor((nowMs * BUCKETS_PER_WINDOW) / windowMs);
}

/** First whole millisecond of `bucket`. */
function bucketStartMs(bucket: number, windowMs: number): number {
  return Math.ceil((bucket * windowMs) / BUCKETS_PER_WINDOW);
}

function checkLimits(requests: number, windowMs: number): void {
  if (!Number.isInteger(requests) || requests < 1 || requests > MAX_REQUESTS) {
    throw new RangeError(`requests must be an integer in 1..${MAX_REQUESTS}`);
  }
  if (!Number.isInteger(windowMs) || windowMs < 1 || windowMs > MAX_WINDOW_MS) {
    throw new RangeError(`windowMs must be an integer in 1..${MAX_WINDOW_MS}`);
  }
}
