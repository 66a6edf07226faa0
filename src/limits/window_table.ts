/**
 * @module
 * A table of sliding-window rate counters in one `SharedArrayBuffer`, lock-free
 * (compare-and-swap only), so several isolates can admit against the same
 * counters exactly.
 *
 * One file on purpose, past the usual size: split into layout, header and ring
 * modules it measured 20–25% slower at 100k keys (V8 reads imported constants
 * and helpers across module boundaries less cheaply on this path).
 *
 * How it works: a window of `windowMs` is cut into {@linkcode BUCKETS_PER_WINDOW}
 * buckets. Each entry is a 64-byte header and a ring of 64 archived buckets,
 * each a count and the offset of its latest admission, side by side. The
 * header's "current" word (bucket tag + count) is what every admission CASes.
 * Admission counts every bucket that can hold a request younger than
 * `windowMs`, and drops the oldest bucket only when its latest admission is
 * provably out of the window. That never over-admits (the counted span always
 * covers the rolling window) and, with 63 buckets, over-counts by at most 1/63
 * of a window, which is why an even pace at 97% of the limit is never rejected.
 *
 * The hot path touches the header only. What the current bucket needs besides
 * its own count (the sum of the 63 archived buckets before it, the oldest
 * one's count, and when that one's latest admission leaves) is cached there,
 * each word tagged with the bucket it was computed for, and every writer
 * stores values true for the tag. So plain reads are enough (an `Atomics.load`
 * is a builtin call, as dear as the rest of the path): a stale read misses the
 * tag and takes the general path, and the CAS on "current" validates the
 * count. An admission in the current bucket is one CAS, plus one on the
 * latest-activity time when the millisecond changes.
 *
 * Moving on: whoever moves "current" to a new bucket reads it atomically, then
 * clears stale aliases from the slots it enters, archives the finished
 * bucket's count (before the move, so whoever sees the new bucket sees the
 * final count; never over a newer bucket's, see `#archive`) and works out the
 * new bucket's cache: from the previous bucket's (plus the finished bucket,
 * minus the buckets that fell out), or summed from the ring when the cache was
 * not the previous bucket's, and once per tag cycle regardless. It reads all
 * that while "current" still holds the old bucket, so its own CAS validates
 * the reads; the move and its admission are that one CAS. Only then does the
 * mover store the finished bucket's latest-admission offset and the new cache;
 * until they land, others see that offset as unknown (kept, never dropped
 * early) or miss the cache and sum it themselves, checked by an atomic re-read
 * of "current".
 *
 * Clocks: isolates read their clocks independently, so a call may be stamped
 * before the bucket "current" has reached. Such a call is judged by its own
 * stamp: everything admitted after `nowMs - windowMs` counts, up to and
 * including the current bucket, so nothing is ever over-admitted by the
 * callers' own stamps. It is counted in the current bucket (later is safe: it
 * only leaves the window later). If a bucket it needs was overwritten
 * meanwhile (it lags by two or more buckets that saw traffic), it is denied.
 * Each entry keeps the latest stamp that admitted or moved "current" (only
 * ever raised, so it bounds every stamp counted in the current bucket); a call
 * stamped more than `SILENT_WINDOWS` windows before it cannot be placed on the
 * ring and is denied without touching anything, so a clock set back is waited
 * out, never trusted.
 *
 * Bucket tags are only 12 bits, so they repeat. After a long silence the
 * current word's tag can alias a recent one; so once the latest stamp is
 * `SILENT_WINDOWS` (16) windows old (long after every count it holds has left
 * the window, short of the 2048 buckets where lags turn ambiguous), the entry
 * starts afresh at the current bucket.
 * And a ring slot's tag repeats every 64 × 4095 buckets, so whenever the
 * current word moves to a bucket, the slots of that bucket and of those it
 * skipped are cleared of words that merely carry their tag.
 */

/** Buckets a window is divided into; the ring holds one more (the current one). */
export const BUCKETS_PER_WINDOW = 63;
const RING = 64;
const RING_MASK = RING - 1;
const TAG_BITS = 12;
const TAG_MASK = (1 << TAG_BITS) - 1;
const HALF_TAGS = TAG_MASK >> 1; // lags above this are "behind", not "ahead"
const VALUE_BITS = 20;
const VALUE_MASK = (1 << VALUE_BITS) - 1;
const HALF_VALUE = 1 << (VALUE_BITS - 1);
/** Largest `requests` a window may allow (20 bits of count). */
export const MAX_REQUESTS = VALUE_MASK - 1;
/** Largest `windowMs` (bucket offsets are kept in 20 bits). */
export const MAX_WINDOW_MS = 3_600_000;

// The header: the first 16 words (one 64-byte cache line) of an entry.
const CURRENT = 0; // tag | count of the current bucket
const SUM = 1; // tag of bucket B | archived counts of B-63..B-1
const OLDEST = 2; // tag of bucket B | archived count of B-63
const OLDEST_LEAVES = 3; // tag of bucket B | low 20 bits of the ms at which B-63's latest admission leaves
const LIMIT = 4; // requests per window
const WINDOW_MS = 5; // window length, ms
const LAST_SEEN_S = 6; // seconds since table epoch of the last admission or move (for reclaim)
const LAST_MS = 7; // ms of the latest admission or move as an int32 (wraps); see `timing`
const HEADER_WORDS = 16;
// The ring: slot s is the pair RING_AT + 2s (tag | count) and RING_AT + 2s + 1
// (tag | offset of the latest admission from the bucket's start).
const RING_AT = HEADER_WORDS;
/** Int32 words one entry takes. */
export const ENTRY_WORDS = RING_AT + 2 * RING;
/** Bytes one entry takes. */
export const ENTRY_BYTES = ENTRY_WORDS * 4;

const EMPTY_TAG = TAG_MASK; // never equals a live tag after `tagOf` (see below)
const EMPTY_WORD = EMPTY_TAG << VALUE_BITS;
const RETRY = -2; // internal: "current" changed under us, read it again
// Where a call's stamp stands against the entry's latest activity (see `timing`).
const SETTLED = 0;
const SILENT = 1;
const STALE = 2;

/**
 * Windows without an admission or move after which an entry starts afresh,
 * and how far a call may be stamped before the latest one and still be judged.
 * Not 1: a caller whose clock read lags another isolate's still needs the
 * counts of its own, slightly earlier window. 16 windows is 1008 buckets, well
 * short of the 2048 where a 12-bit tag lag becomes ambiguous.
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

function nextTag(tag: number): number {
  return tag === TAG_MASK - 1 ? 0 : tag + 1;
}

/**
 * The tag of the bucket a whole ring before the one tagged `tag`. Before the
 * first ring it names a bucket 4095 - 64 tags later, which no slot can hold yet.
 */
function ringEarlierTag(tag: number): number {
  return tag >= RING ? tag - RING : tag - RING + TAG_MASK;
}

/**
 * A plain read: tear-free on an Int32Array but unordered, so only for config
 * words, tagged words whose every value is true for its tag, and words read
 * after an atomic read of "current" (see the module note).
 */
function peek(w: Int32Array, at: number): number {
  return w[at] ?? 0;
}

/** Word index of the count of `bucket`'s ring slot; its latest-admission offset follows. */
function slotAt(base: number, bucket: number): number {
  return base + RING_AT + 2 * (bucket & RING_MASK);
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
    for (const at of [CURRENT, SUM, OLDEST, OLDEST_LEAVES]) Atomics.store(w, base + at, EMPTY_WORD);
    for (let i = RING_AT; i < ENTRY_WORDS; i++) Atomics.store(w, base + i, EMPTY_WORD);
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

  /** Seconds since the epoch at which entry `index` last admitted a request (or moved on). */
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
    const windowMs = peek(w, base + WINDOW_MS);
    const bucket = bucketOf(nowMs, windowMs);
    const tag = tagOf(bucket);
    // A stale read only fails the CAS below; the general path then reads atomically.
    const cur = peek(w, base + CURRENT);
    if (tagPart(cur) === tag && timing(w, base, nowMs, windowMs) === SETTLED) {
      const older = cachedOlder(w, base, tag, nowMs);
      if (older >= 0) {
        const limit = peek(w, base + LIMIT);
        const used = older + (cur & VALUE_MASK);
        if (used >= limit) return -1;
        // Before the CAS: whoever sees this admission in CURRENT also sees its time.
        noteTime(w, base, nowMs);
        if (Atomics.compareExchange(w, base + CURRENT, cur, cur + 1) === cur) {
          return limit - used - 1;
        }
      }
    }
    return this.#settle(base, nowMs, bucket, true);
  }

  /** How many requests the window holds at `nowMs` (as admission counts them). */
  used(index: number, nowMs: number): number {
    const w = this.#w;
    const base = index * ENTRY_WORDS;
    const windowMs = peek(w, base + WINDOW_MS);
    const bucket = bucketOf(nowMs, windowMs);
    const tag = tagOf(bucket);
    const cur = Atomics.load(w, base + CURRENT);
    if (tagPart(cur) === tag && timing(w, base, nowMs, windowMs) === SETTLED) {
      const older = cachedOlder(w, base, tag, nowMs);
      if (older >= 0) return older + (cur & VALUE_MASK);
    }
    return this.#settle(base, nowMs, bucket, false);
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
    const behind = lag(nowBucket, tagPart(cur));
    const curBucket = tagPart(cur) === EMPTY_TAG
      ? -1
      : behind > HALF_TAGS
      ? nowBucket + TAG_MASK - behind
      : nowBucket - behind;
    // Oldest first: each bucket leaves the window windowMs after its latest admission.
    for (let b = nowBucket - BUCKETS_PER_WINDOW; b <= Math.max(nowBucket, curBucket); b++) {
      let count: number;
      let lastMs: number;
      if (b === curBucket) {
        count = cur & VALUE_MASK;
        lastMs = bucketStartMs(b, windowMs) + this.#lastOffsetMs(base, b, windowMs);
      } else {
        const at = slotAt(base, b);
        const word = Atomics.load(w, at);
        count = tagPart(word) === tagOf(b) ? word & VALUE_MASK : 0;
        const lastWord = Atomics.load(w, at + 1);
        // Unknown: it leaves when the ring moves past it, as admission treats it.
        lastMs = tagPart(lastWord) === tagOf(b)
          ? bucketStartMs(b, windowMs) + (lastWord & VALUE_MASK)
          : bucketStartMs(b + 1, windowMs);
      }
      const leavesAtMs = lastMs + windowMs;
      // Already out of the window, so `used` above did not count it.
      if (count === 0 || leavesAtMs <= nowMs) continue;
      excess -= count;
      if (excess <= 0) return Math.max(1, leavesAtMs - nowMs);
    }
    return windowMs;
  }

  /**
   * The general path, reading "current" atomically: starts an empty or silent
   * entry, moves to a new bucket, refills a missed cache, or judges a call
   * stamped behind the current bucket. `nowBucket` is the bucket of `nowMs`.
   * Returns what `tryAdmit` returns, or with `admit` false what `used` returns.
   */
  #settle(base: number, nowMs: number, nowBucket: number, admit: boolean): number {
    const w = this.#w;
    const windowMs = peek(w, base + WINDOW_MS);
    const fresh = pack(tagOf(nowBucket), 0);
    for (;;) {
      const cur = Atomics.load(w, base + CURRENT);
      if (tagPart(cur) === EMPTY_TAG) {
        noteTime(w, base, nowMs);
        Atomics.compareExchange(w, base + CURRENT, cur, fresh);
        continue;
      }
      const stands = timing(w, base, nowMs, windowMs);
      if (stands === SILENT) {
        // After a long silence the tag may have wrapped (even to this very
        // bucket's tag), so the lag below would be a guess; but then nothing
        // counted is in the window, so start afresh at this bucket.
        if (!this.#startAfresh(base, cur, nowBucket, nowMs) || cur !== fresh) continue;
      } else if (stands === STALE) {
        // "current" may be 2048+ buckets on, where its tag says "ahead": judge nothing.
        return admit ? -1 : peek(w, base + LIMIT);
      }
      const behind = lag(nowBucket, tagPart(cur));
      const result = behind === 0
        ? this.#settleCurrent(base, cur, nowBucket, nowMs, admit)
        : behind <= HALF_TAGS
        ? this.#advance(base, cur, nowBucket - behind, nowBucket, nowMs, admit)
        : this.#settleBehind(base, cur, nowBucket, nowBucket + TAG_MASK - behind, nowMs, admit);
      if (result !== RETRY) return result;
    }
  }

  /** `#settle` when "current" (`cur`) already holds the bucket of `nowMs`. */
  #settleCurrent(base: number, cur: number, bucket: number, nowMs: number, admit: boolean): number {
    const w = this.#w;
    let older = cachedOlder(w, base, tagOf(bucket), nowMs);
    if (older < 0) older = this.#refillCache(base, cur, bucket, nowMs);
    if (older < 0) return RETRY;
    const used = older + (cur & VALUE_MASK);
    if (!admit) return used;
    const limit = peek(w, base + LIMIT);
    if (used >= limit) return -1;
    noteTime(w, base, nowMs);
    if (Atomics.compareExchange(w, base + CURRENT, cur, cur + 1) !== cur) return RETRY;
    return limit - used - 1;
  }

  /**
   * Moves "current" from `cur` (in `fromBucket`) to `toBucket`, the bucket of
   * `nowMs`, admitting in the same CAS if `admit` and the new window has room.
   * Everything is read while "current" still holds `cur`, so a successful CAS
   * validates it. Returns what `#settle` returns, or `RETRY`.
   */
  #advance(
    base: number,
    cur: number,
    fromBucket: number,
    toBucket: number,
    nowMs: number,
    admit: boolean,
  ): number {
    const w = this.#w;
    const windowMs = peek(w, base + WINDOW_MS);
    const count = cur & VALUE_MASK;
    const fallenOut = this.#enterSlots(base, cur, fromBucket, toBucket);
    if (fallenOut < 0) return RETRY;
    const sum = this.#nextSum(base, fromBucket, toBucket, count, fallenOut);
    // The oldest bucket of the new window: the finished one, an archived one, or a skipped one.
    const oldest = toBucket - BUCKETS_PER_WINDOW;
    const lastOffsetMs = count > 0 ? this.#lastOffsetMs(base, fromBucket, windowMs) : 0;
    const oldestAt = slotAt(base, oldest);
    const oldestWord = oldest === fromBucket
      ? pack(tagOf(oldest), count)
      : oldest < fromBucket
      ? peek(w, oldestAt)
      : EMPTY_WORD; // skipped
    const oldestCount = tagPart(oldestWord) === tagOf(oldest) ? oldestWord & VALUE_MASK : 0;
    const lastWord = oldest === fromBucket
      ? pack(tagOf(oldest), lastOffsetMs)
      : peek(w, oldestAt + 1);
    const leavesMs = leavesAtMs(lastWord, toBucket, windowMs);
    // Archive before moving on, so whoever sees the new bucket sees the final count.
    if (count > 0 && !this.#archive(base, cur, fromBucket)) return RETRY;
    const older = sum - (nowMs >= leavesMs ? oldestCount : 0);
    const limit = peek(w, base + LIMIT);
    const admitted = admit && older < limit;
    noteTime(w, base, nowMs);
    const next = pack(tagOf(toBucket), admitted ? 1 : 0);
    if (Atomics.compareExchange(w, base + CURRENT, cur, next) !== cur) return RETRY;
    // Only the mover stores what depends on the final count.
    if (count > 0) w[slotAt(base, fromBucket) + 1] = pack(tagOf(fromBucket), lastOffsetMs);
    this.#storeCache(base, toBucket, sum, oldestCount, leavesMs);
    if (!admit) return older;
    return admitted ? limit - older - 1 : -1;
  }

  /**
   * Prepares the slots of the buckets "current" (`cur`, in `fromBucket`)
   * enters or skips on its way to `toBucket`: clears words that merely carry
   * their tag, and returns the total of the counts they still hold from 64
   * buckets earlier, which fall out of the window now; `RETRY` if "current"
   * moved on.
   */
  #enterSlots(base: number, cur: number, fromBucket: number, toBucket: number): number {
    const w = this.#w;
    let fallenOut = 0;
    const firstBucket = Math.max(fromBucket + 1, toBucket - BUCKETS_PER_WINDOW);
    for (let b = firstBucket, tag = tagOf(b); b <= toBucket; b++, tag = nextTag(tag)) {
      const at = slotAt(base, b);
      const word = peek(w, at);
      if (tagPart(word) === tag) {
        if (!this.#clear(base, cur, at, tag)) return RETRY;
      } else if (tagPart(word) === ringEarlierTag(tag)) {
        fallenOut += word & VALUE_MASK;
      }
      const lastWord = peek(w, at + 1);
      if (tagPart(lastWord) === tag && !this.#clear(base, cur, at + 1, tag)) return RETRY;
    }
    return fallenOut;
  }

  /**
   * The archived counts `toBucket`'s window holds (buckets toBucket-63..
   * toBucket-1), once `fromBucket` (holding `count`) is archived: from the
   * cached sum of `fromBucket` when there is one, else summed from the ring.
   */
  #nextSum(
    base: number,
    fromBucket: number,
    toBucket: number,
    count: number,
    fallenOut: number,
  ): number {
    if (toBucket - fromBucket > BUCKETS_PER_WINDOW) return 0;
    const sumWord = peek(this.#w, base + SUM);
    // Summed afresh once per tag cycle, so no error could outlive one.
    const cached = tagPart(sumWord) === tagOf(fromBucket) && (sumWord & VALUE_MASK) < VALUE_MASK &&
      tagOf(toBucket) > tagOf(fromBucket);
    if (cached) {
      const sum = (sumWord & VALUE_MASK) + count - fallenOut;
      if (sum >= 0) return sum;
    }
    let sum = count;
    for (let b = toBucket - BUCKETS_PER_WINDOW; b < fromBucket; b++) {
      const word = peek(this.#w, slotAt(base, b));
      if (tagPart(word) === tagOf(b)) sum += word & VALUE_MASK;
    }
    return sum;
  }

  /**
   * `#settle` for a call stamped in `callBucket`, behind `curBucket` where
   * "current" (`cur`) is: counts every admission after `nowMs - windowMs`,
   * up to the current bucket, and counts its own there.
   */
  #settleBehind(
    base: number,
    cur: number,
    callBucket: number,
    curBucket: number,
    nowMs: number,
    admit: boolean,
  ): number {
    const w = this.#w;
    const windowMs = peek(w, base + WINDOW_MS);
    const limit = peek(w, base + LIMIT);
    const oldest = callBucket - BUCKETS_PER_WINDOW;
    let used = cur & VALUE_MASK;
    for (let b = oldest; b < curBucket; b++) {
      const at = slotAt(base, b);
      const word = Atomics.load(w, at);
      if (tagPart(word) !== tagOf(b)) {
        // Overwritten by a later bucket: its count is gone, so the window cannot be judged.
        for (let later = b + RING; later <= curBucket; later += RING) {
          if (tagPart(word) !== tagOf(later)) continue;
          if (later === curBucket) return RETRY; // "current" is being archived
          return admit ? -1 : Math.max(used, limit);
        }
        continue;
      }
      if (b === oldest) {
        const lastWord = Atomics.load(w, at + 1);
        const leavesMs = bucketStartMs(callBucket, windowMs) + (lastWord & VALUE_MASK);
        if (tagPart(lastWord) === tagOf(b) && leavesMs <= nowMs) continue;
      }
      used += word & VALUE_MASK;
    }
    if (!admit) return Atomics.load(w, base + CURRENT) === cur ? used : RETRY;
    if (used >= limit) return -1;
    noteTime(w, base, nowMs);
    if (Atomics.compareExchange(w, base + CURRENT, cur, cur + 1) !== cur) return RETRY;
    return limit - used - 1;
  }

  /**
   * Sums the ring for `bucket`'s cache (atomically, then checking that
   * "current" still holds `cur`), stores it and returns the archived requests
   * in the window at `nowMs`; `RETRY` if "current" moved.
   */
  #refillCache(base: number, cur: number, bucket: number, nowMs: number): number {
    const w = this.#w;
    const windowMs = peek(w, base + WINDOW_MS);
    let sum = 0;
    for (let b = bucket - BUCKETS_PER_WINDOW; b < bucket; b++) {
      const word = Atomics.load(w, slotAt(base, b));
      if (tagPart(word) === tagOf(b)) sum += word & VALUE_MASK;
    }
    const oldest = bucket - BUCKETS_PER_WINDOW;
    const word = Atomics.load(w, slotAt(base, oldest));
    const lastWord = Atomics.load(w, slotAt(base, oldest) + 1);
    if (Atomics.load(w, base + CURRENT) !== cur) return RETRY;
    const oldestCount = tagPart(word) === tagOf(oldest) ? word & VALUE_MASK : 0;
    const leavesMs = leavesAtMs(lastWord, bucket, windowMs);
    this.#storeCache(base, bucket, sum, oldestCount, leavesMs);
    return sum - (nowMs >= leavesMs ? oldestCount : 0);
  }

  /** Stores `bucket`'s cache; every writer of a tag stores values true for it. */
  #storeCache(
    base: number,
    bucket: number,
    sum: number,
    oldestCount: number,
    leavesMs: number,
  ): void {
    const w = this.#w;
    const tag = tagOf(bucket);
    // A saturated sum is kept whole: subtracting the oldest from it could under-count.
    const saturated = sum >= VALUE_MASK;
    w[base + SUM] = pack(tag, saturated ? VALUE_MASK : sum);
    w[base + OLDEST] = pack(tag, saturated ? 0 : oldestCount);
    w[base + OLDEST_LEAVES] = pack(tag, leavesMs & VALUE_MASK);
  }

  /**
   * Archives the count of `fromBucket`, which "current" holds as `cur`, into
   * its slot, keeping the larger if another isolate got there first. The slot
   * is read, then "current" checked to still hold `cur`: so the value read is
   * no newer bucket's (one that shares the slot 64 buckets on), and the CAS from
   * it fails if one lands meanwhile. A late isolate never overwrites a newer
   * count. False if "current" moved on.
   */
  #archive(base: number, cur: number, fromBucket: number): boolean {
    const w = this.#w;
    const at = slotAt(base, fromBucket);
    const tag = tagOf(fromBucket);
    const count = cur & VALUE_MASK;
    for (;;) {
      // Atomic, so the check below cannot be older than what this read saw.
      const old = Atomics.load(w, at);
      if (tagPart(old) === tag && (old & VALUE_MASK) >= count) return true;
      if (peek(w, base + CURRENT) !== cur) return false;
      if (Atomics.compareExchange(w, at, old, pack(tag, count)) === old) return true;
    }
  }

  /**
   * Offset of the latest admission in `bucket` (the one "current" holds) from
   * its start, kept inside the bucket: admissions counted there are stamped
   * before its end, and one stamped before its start only leaves later.
   */
  #lastOffsetMs(base: number, bucket: number, windowMs: number): number {
    const startMs = bucketStartMs(bucket, windowMs);
    const lengthMs = bucketStartMs(bucket + 1, windowMs) - startMs;
    const offsetMs = (peek(this.#w, base + LAST_MS) - (startMs | 0)) | 0;
    return Math.min(Math.max(offsetMs, 0), lengthMs - 1);
  }

  /**
   * Empties a silent entry: clears words that alias the window ending at
   * `nowBucket`, drops the cache, records `nowMs` as the latest activity, then
   * moves CURRENT from `cur` to `nowBucket` with no count. False if CURRENT
   * changed under us.
   */
  #startAfresh(base: number, cur: number, nowBucket: number, nowMs: number): boolean {
    const w = this.#w;
    for (let b = nowBucket - BUCKETS_PER_WINDOW; b <= nowBucket; b++) {
      const at = slotAt(base, b);
      for (const wordAt of [at, at + 1]) {
        const old = Atomics.load(w, wordAt);
        if (tagPart(old) === tagOf(b) && !this.#clear(base, cur, wordAt, tagOf(b))) return false;
      }
    }
    Atomics.store(w, base + SUM, EMPTY_WORD);
    const lastMs = peek(w, base + LAST_MS);
    if (nowMs >= (peek(w, base + LAST_SEEN_S) + LONG_SILENCE_S) * 1000) {
      // LAST_MS may have wrapped past int32 meanwhile: set it, do not raise it.
      w[base + LAST_SEEN_S] = (nowMs / 1000) | 0;
      Atomics.compareExchange(w, base + LAST_MS, lastMs, nowMs | 0);
    }
    noteTime(w, base, nowMs);
    const fresh = pack(tagOf(nowBucket), 0);
    return Atomics.compareExchange(w, base + CURRENT, cur, fresh) === cur;
  }

  /**
   * Clears the ring word at `at` if it carries `tag`, the tag of a bucket
   * "current" (`cur`) has not left yet: such a word is from a whole ring × tag
   * period ago. As in `#archive`, the word is read before "current" is checked
   * and cleared by CAS from what was read, so a count archived after another
   * isolate moved on is never lost. False if "current" moved on.
   */
  #clear(base: number, cur: number, at: number, tag: number): boolean {
    const w = this.#w;
    const old = Atomics.load(w, at);
    if (tagPart(old) !== tag) return true;
    if (peek(w, base + CURRENT) !== cur) return false;
    Atomics.compareExchange(w, at, old, EMPTY_WORD);
    return true;
  }
}

/**
 * The archived requests still in the window at `nowMs`, from the header's
 * cache for the bucket tagged `tag`; -1 when the cache is for another bucket.
 */
function cachedOlder(w: Int32Array, base: number, tag: number, nowMs: number): number {
  const sum = peek(w, base + SUM);
  const oldest = peek(w, base + OLDEST);
  const leaves = peek(w, base + OLDEST_LEAVES);
  if (tagPart(sum) !== tag || tagPart(oldest) !== tag || tagPart(leaves) !== tag) return -1;
  // Both times lie in this bucket (< 2^16 ms long), so 20 low bits compare them.
  const left = (((nowMs | 0) - (leaves & VALUE_MASK)) & VALUE_MASK) < HALF_VALUE;
  return (sum & VALUE_MASK) - (left ? oldest & VALUE_MASK : 0);
}

/**
 * Where `nowMs` stands against entry `base`'s latest activity: `SILENT` when
 * nothing was admitted or moved in the last {@linkcode SILENT_WINDOWS} windows,
 * `STALE` when the call is stamped more than that before the latest, else
 * `SETTLED`. Admissions and moves raise the times before their CAS on CURRENT,
 * so a caller that read CURRENT atomically first never misses one it saw; on
 * the hot path (a plain read) an older time only sends the call to `#settle`.
 */
function timing(w: Int32Array, base: number, nowMs: number, windowMs: number): number {
  // int32 wrap-around difference: negative when another isolate's clock is ahead.
  const sinceMs = ((nowMs | 0) - peek(w, base + LAST_MS)) | 0;
  const spanMs = SILENT_WINDOWS * windowMs;
  if (sinceMs >= spanMs || nowMs >= (peek(w, base + LAST_SEEN_S) + LONG_SILENCE_S) * 1000) {
    return SILENT;
  }
  return sinceMs < -spanMs ? STALE : SETTLED;
}

/**
 * Raises LAST_MS to `nowMs` (an admission or a move of CURRENT), never lowers
 * it: it bounds the stamps of everything counted in CURRENT's bucket, which
 * becomes that bucket's latest-admission offset when it is archived.
 */
function noteTime(w: Int32Array, base: number, nowMs: number): void {
  const at = base + LAST_MS;
  const next = nowMs | 0;
  let old = peek(w, at);
  if (old === next) return; // the hot path: another admission this ms
  const nowS = (nowMs / 1000) | 0;
  if (peek(w, base + LAST_SEEN_S) !== nowS) w[base + LAST_SEEN_S] = nowS;
  while (((old - next) | 0) < 0) {
    const seen = Atomics.compareExchange(w, at, old, next);
    if (seen === old) return;
    old = seen;
  }
}

/**
 * When the latest admission of `bucket`'s oldest bucket (B-63), whose ring
 * word for it is `lastWord`, leaves the window: start(B-63) + windowMs is
 * start(B) exactly. Unknown (not stored yet): at the next bucket, so it is
 * never dropped early.
 */
function leavesAtMs(lastWord: number, bucket: number, windowMs: number): number {
  return tagPart(lastWord) === tagOf(bucket - BUCKETS_PER_WINDOW)
    ? bucketStartMs(bucket, windowMs) + (lastWord & VALUE_MASK)
    : bucketStartMs(bucket + 1, windowMs);
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
