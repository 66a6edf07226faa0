/**
 * Runs sluice as a real child process and reads its output line by line, so
 * tests can wait for "listening" instead of sleeping.
 */

/** A running child with its stdout lines. */
export interface RunningProcess {
  child: Deno.ChildProcess;
  /** Resolves with the first stdout line matching `pattern`. */
  waitForLine(pattern: RegExp): Promise<RegExpExecArray>;
  /** Every stdout line so far. */
  lines: string[];
  /** Resolves when the child has exited. */
  status: Promise<Deno.CommandStatus>;
  stderr: Promise<string>;
}

/** Starts `deno <args>` in `cwd`. */
export function startDeno(
  args: string[],
  cwd: string,
  env: Record<string, string> = {},
): RunningProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const lines: string[] = [];
  const waiters: { pattern: RegExp; resolve: (m: RegExpExecArray) => void }[] = [];
  const done = (async () => {
    const decoder = new TextDecoderStream();
    let buffered = "";
    for await (const text of child.stdout.pipeThrough(decoder)) {
      buffered += text;
      let at: number;
      while ((at = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, at);
        buffered = buffered.slice(at + 1);
        lines.push(line);
        for (let i = waiters.length - 1; i >= 0; i--) {
          const waiter = waiters[i];
          const match = waiter?.pattern.exec(line);
          if (waiter !== undefined && match) {
            waiters.splice(i, 1);
            waiter.resolve(match);
          }
        }
      }
    }
  })();
  const stderr = new Response(child.stderr).text();
  return {
    child,
    lines,
    status: done.then(() => child.status),
    stderr,
    waitForLine(pattern) {
      for (const line of lines) {
        const match = pattern.exec(line);
        if (match) return Promise.resolve(match);
      }
      return new Promise((resolve, reject) => {
        waiters.push({ pattern, resolve });
        child.status.then((s) => reject(new Error(`process exited (${s.code}) before ${pattern}`)));
      });
    },
  };
}
