/**
 * @module
 * A small Prometheus registry: labelled counters and histograms updated on
 * the request path (a map lookup and an add), and gauges/counters read from
 * their owners at scrape time (slots in use, queue depth, reloads), rendered
 * in the text exposition format 0.0.4.
 */

type Labels = Readonly<Record<string, string>>;

/** A cheap series key: label values joined (label names are fixed per call site). */
function seriesKey(labels: Labels): string {
  let key = "";
  for (const name in labels) key += `${name}\u0000${labels[name]}\u0001`;
  return key;
}

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function labelText(labels: Labels, extra?: [string, string]): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  if (extra !== undefined) parts.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  render(): string[];
}

/** A counter with labels, incremented on the request path. */
export class Counter implements Family {
  readonly type = "counter";
  readonly name: string;
  readonly help: string;
  #values = new Map<string, { labels: Labels; value: number }>();

  constructor(name: string, help: string) {
    this.name = name;
    this.help = help;
  }

  /** Adds `by` to the series for `labels`. */
  inc(labels: Labels = {}, by = 1): void {
    const key = seriesKey(labels);
    const series = this.#values.get(key);
    if (series === undefined) this.#values.set(key, { labels, value: by });
    else series.value += by;
  }

  /** The current value for `labels` (0 if never incremented). */
  get(labels: Labels = {}): number {
    return this.#values.get(seriesKey(labels))?.value ?? 0;
  }

  render(): string[] {
    return [...this.#values.values()].map((s) =>
      `${this.name}${labelText(s.labels)} ${formatValue(s.value)}`
    );
  }
}

/** A histogram with fixed buckets. */
export class Histogram implements Family {
  readonly type = "histogram";
  readonly name: string;
  readonly help: string;
  readonly buckets: readonly number[];
  #series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();

  constructor(name: string, help: string, buckets: readonly number[]) {
    this.name = name;
    this.help = help;
    this.buckets = [...buckets].sort((a, b) => a - b);
  }

  /** Records one observation. */
  observe(value: number, labels: Labels = {}): void {
    const key = seriesKey(labels);
    let series = this.#series.get(key);
    if (series === undefined) {
      series = { labels, counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.#series.set(key, series);
    }
    for (let i = 0; i < this.buckets.length; i++) {
      if (value <= (this.buckets[i] ?? Infinity)) {
        series.counts[i] = (series.counts[i] ?? 0) + 1;
        break;
      }
    }
    series.sum += value;
    series.count++;
  }

  render(): string[] {
    const lines: string[] = [];
    for (const s of this.#series.values()) {
      let cumulative = 0;
      this.buckets.forEach((le, i) => {
        cumulative += s.counts[i] ?? 0;
        lines.push(
          `${this.name}_bucket${labelText(s.labels, ["le", formatValue(le)])} ${cumulative}`,
        );
      });
      lines.push(`${this.name}_bucket${labelText(s.labels, ["le", "+Inf"])} ${s.count}`);
      lines.push(`${this.name}_sum${labelText(s.labels)} ${formatValue(s.sum)}`);
      lines.push(`${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return lines;
  }
}

/** Series read from their owner at scrape time. */
export class Collected implements Family {
  readonly type: "counter" | "gauge";
  readonly name: string;
  readonly help: string;
  #collect: () => Iterable<[Labels, number]>;

  constructor(
    name: string,
    help: string,
    type: "counter" | "gauge",
    collect: () => Iterable<[Labels, number]>,
  ) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.#collect = collect;
  }

  render(): string[] {
    const lines: string[] = [];
    for (const [labels, value] of this.#collect()) {
      lines.push(`${this.name}${labelText(labels)} ${formatValue(value)}`);
    }
    return lines;
  }
}

/** A set of metric families rendered together. */
export class Registry {
  #families: Family[] = [];

  /** Registers and returns a counter. */
  counter(name: string, help: string): Counter {
    return this.#add(new Counter(name, help));
  }

  /** Registers and returns a histogram. */
  histogram(name: string, help: string, buckets: readonly number[]): Histogram {
    return this.#add(new Histogram(name, help, buckets));
  }

  /** Registers series computed at scrape time. */
  collect(
    name: string,
    help: string,
    type: "counter" | "gauge",
    collect: () => Iterable<[Labels, number]>,
  ): void {
    this.#add(new Collected(name, help, type, collect));
  }

  /** The text exposition of every family. */
  render(): string {
    const lines: string[] = [];
    for (const family of this.#families) {
      lines.push(
        `# HELP ${family.name} ${family.help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n")}`,
      );
      lines.push(`# TYPE ${family.name} ${family.type}`);
      lines.push(...family.render());
    }
    return lines.join("\n") + "\n";
  }

  #add<T extends Family>(family: T): T {
    if (this.#families.some((f) => f.name === family.name)) {
      throw new Error(`metric ${family.name} registered twice`);
    }
    this.#families.push(family);
    return family;
  }
}
