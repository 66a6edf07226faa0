/**
 * Gateway throughput side by side with bare `Deno.serve` and nginx, on this
 * machine, in one run with interleaved rounds (SPEC §9, `deno task bench:http`).
 * Loopback only; every server is started here and stopped at the end.
 *
 * Targets, each at 1 and N isolates / nginx worker processes:
 *   bare Deno.serve · nginx `return 200` · nginx `limit_req` · nginx `proxy_pass`
 *   · sluice own route (`GET /v1/limits`) · sluice forwarding `/v1/echo` · sluice
 *   monitor route — the forwarding ones all to the same bare upstream.
 * Then a latency probe below saturation: bare vs sluice's own route with one
 * connection (a closed loop of one request at a time), p99 difference.
 *
 * Env: BENCH_SECONDS (default 5), BENCH_ROUNDS (2), BENCH_CONNECTIONS (64),
 * BENCH_WORKERS (N, default 2). Needs `wrk` and `nginx` (installed with
 * apt-get when missing and running as root).
 */

import { hashApiKey } from "../src/plans/api_key.ts";

const seconds = Number(Deno.env.get("BENCH_SECONDS") ?? "5");
const rounds = Number(Deno.env.get("BENCH_ROUNDS") ?? "2");
const connections = Number(Deno.env.get("BENCH_CONNECTIONS") ?? "64");
const many = Number(Deno.env.get("BENCH_WORKERS") ?? "2");
const root = new URL("../", import.meta.url).pathname;
const apiKey = "sk_bench_0123456789abcdefghijkl";

interface Result {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

interface Target {
  name: string;
  workers: number;
  url: string;
  headers?: Record<string, string>;
  /** Compare with this target (same worker count) for the ratio column. */
  baseline?: string;
}

async function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  const output = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: output.code, out: decode(output.stdout) + decode(output.stderr) };
}

async function ensureTools(): Promise<void> {
  const missing: string[] = [];
  for (const tool of ["wrk", "nginx"]) {
    const found = await run("sh", ["-c", `command -v ${tool} || test -x /usr/sbin/${tool}`]);
    if (found.code !== 0) missing.push(tool);
  }
  if (missing.length === 0) return;
  console.error(`installing ${missing.join(", ")} with apt-get …`);
  const installed = await run("sh", [
    "-c",
    `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${
      missing.join(" ")
    }`,
  ]);
  if (installed.code !== 0) {
    throw new Error(`could not install ${missing.join(", ")}:\n${installed.out}`);
  }
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  return port;
}

async function waitForPort(port: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`nothing listens on ${port}`);
}

function spawn(cmd: string, args: string[], cwd = root): Deno.ChildProcess {
  return new Deno.Command(cmd, { args, cwd, stdout: "null", stderr: "null", stdin: "null" })
    .spawn();
}

function nginxConfig(dir: string, port: number, workers: number, upstreamPort: number): string {
  return `worker_processes ${workers};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  limit_req_zone $binary_remote_addr zone=perip:10m rate=1000000r/s;
  upstream backend { server 127.0.0.1:${upstreamPort}; keepalive 128; }
  server {
    listen 127.0.0.1:${port} reuseport;
    location = /return { return 200 "ok"; }
    location = /limit { limit_req zone=perip burst=1000000 nodelay; return 200 "ok"; }
    location = /proxy {
      proxy_pass http://backend/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

function toMs(value: string, unit: string): number {
  const n = Number(value);
  return unit === "us" ? n / 1000 : unit === "s" ? n * 1000 : n;
}

async function wrk(
  target: Target,
  threads: number,
  conns: number,
  durationS: number,
): Promise<Result> {
  const args = [`-t${threads}`, `-c${conns}`, `-d${durationS}s`, "--latency"];
  for (const [name, value] of Object.entries(target.headers ?? {})) {
    args.push("-H", `${name}: ${value}`);
  }
  args.push(target.url);
  const { code, out } = await run("wrk", args);
  if (code !== 0) throw new Error(`wrk failed for ${target.name}:\n${out}`);
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /\s50%\s+([\d.]+)(us|ms|s)/.exec(out);
  const p99 = /\s99%\s+([\d.]+)(us|ms|s)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses:\s+(\d+)/.exec(out);
  if (non2xx !== null) console.error(`  ${target.name}: ${non2xx[1]} non-2xx responses`);
  return {
    requestsPerSecond: Number(rps?.[1] ?? 0),
    p50Ms: toMs(p50?.[1] ?? "0", p50?.[2] ?? "ms"),
    p99Ms: toMs(p99?.[1] ?? "0", p99?.[2] ?? "ms"),
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[mid] ?? 0
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

async function main(): Promise<void> {
  await ensureTools();
  const dir = await Deno.makeTempDir({ prefix: "sluice-bench-" });
  const children: Deno.ChildProcess[] = [];
  const nginxDirs: string[] = [];
  try {
    const upstreamPort = freePort();
    children.push(
      spawn(Deno.execPath(), [
        "run",
        "-A",
        "--unstable-net",
        "bench/_bare_server.ts",
        String(upstreamPort),
        "1",
      ]),
    );
    await waitForPort(upstreamPort);

    const targets: Target[] = [];
    for (const workers of [1, many]) {
      const barePort = freePort();
      children.push(
        spawn(Deno.execPath(), [
          "run",
          "-A",
          "--unstable-net",
          "bench/_bare_server.ts",
          String(barePort),
          String(workers),
        ]),
      );
      const nginxPort = freePort();
      const nginxDir = `${dir}/nginx-${workers}`;
      await Deno.mkdir(nginxDir, { recursive: true });
      await Deno.writeTextFile(
        `${nginxDir}/nginx.conf`,
        nginxConfig(nginxDir, nginxPort, workers, upstreamPort),
      );
      children.push(
        spawn("nginx", ["-p", nginxDir, "-c", `${nginxDir}/nginx.conf`, "-g", "daemon off;"]),
      );
      nginxDirs.push(nginxDir);
      const sluicePort = freePort();
      const sluiceDir = `${dir}/sluice-${workers}`;
      await Deno.mkdir(sluiceDir, { recursive: true });
      await Deno.writeTextFile(
        `${sluiceDir}/plans.json`,
        JSON.stringify({
          plans: {
            bench: { concurrency: 10_000, rateLimit: { requests: 1_000_000, windowMs: 1000 } },
          },
          accounts: {
            bench: {
              plan: "bench",
              keys: [{ id: "k", hash: hashApiKey(apiKey), createdAt: "2026-01-01T00:00:00Z" }],
            },
          },
        }),
      );
      children.push(spawn(Deno.execPath(), [
        "run",
        "-A",
        "--config",
        `${root}deno.json`,
        `${root}main.ts`,
        "serve",
        "--port",
        String(sluicePort),
        "--hostname",
        "127.0.0.1",
        "--workers",
        String(workers),
        "--plans",
        `${sluiceDir}/plans.json`,
        "--data-dir",
        `${sluiceDir}/data`,
        "--admin-token",
        "bench-admin-token",
        "--upstream",
        `http://127.0.0.1:${upstreamPort}`,
      ], sluiceDir));
      await Promise.all([waitForPort(barePort), waitForPort(nginxPort), waitForPort(sluicePort)]);
      const auth = { authorization: `Bearer ${apiKey}` };
      const w = `${workers}`;
      targets.push(
        { name: "bare Deno.serve", workers, url: `http://127.0.0.1:${barePort}/` },
        {
          name: "nginx return 200",
          workers,
          url: `http://127.0.0.1:${nginxPort}/return`,
          baseline: "bare Deno.serve",
        },
        {
          name: "nginx limit_req",
          workers,
          url: `http://127.0.0.1:${nginxPort}/limit`,
          baseline: "bare Deno.serve",
        },
        {
          name: "nginx proxy_pass",
          workers,
          url: `http://127.0.0.1:${nginxPort}/proxy`,
          baseline: "bare Deno.serve",
        },
        {
          name: "sluice own route",
          workers,
          url: `http://127.0.0.1:${sluicePort}/v1/limits`,
          headers: auth,
          baseline: "bare Deno.serve",
        },
        {
          name: "sluice forward /v1/*",
          workers,
          url: `http://127.0.0.1:${sluicePort}/v1/echo`,
          headers: auth,
          baseline: "nginx proxy_pass",
        },
        {
          name: "sluice monitor route",
          workers,
          url: `http://127.0.0.1:${sluicePort}/v1/monitor/chatgpt`,
          headers: auth,
          baseline: "nginx proxy_pass",
        },
      );
      console.error(`started targets at ${w} worker(s)`);
    }

    const results = new Map<Target, Result[]>();
    for (let round = 1; round <= rounds; round++) {
      for (const target of targets) {
        // Warm up (JIT, keep-alive pools) without counting it.
        await wrk(target, 2, connections, 1);
        const result = await wrk(target, 2, connections, seconds);
        results.set(target, [...(results.get(target) ?? []), result]);
        console.error(
          `round ${round}: ${target.name} ×${target.workers}: ${
            Math.round(result.requestsPerSecond)
          } req/s`,
        );
      }
    }

    const summary = new Map<string, Result>();
    for (const target of targets) {
      const runs = results.get(target) ?? [];
      summary.set(`${target.name}|${target.workers}`, {
        requestsPerSecond: median(runs.map((r) => r.requestsPerSecond)),
        p50Ms: median(runs.map((r) => r.p50Ms)),
        p99Ms: median(runs.map((r) => r.p99Ms)),
      });
    }
    const lines = [
      `wrk -t2 -c${connections} -d${seconds}s, ${rounds} interleaved rounds (median), ${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}`,
      "",
      "| target | isolates / nginx workers | req/s | p50 ms | p99 ms | ratio | vs |",
      "|---|---|---|---|---|---|---|",
    ];
    for (const target of targets) {
      const r = summary.get(`${target.name}|${target.workers}`);
      const base = target.baseline === undefined
        ? undefined
        : summary.get(`${target.baseline}|${target.workers}`);
      const ratio = base === undefined || r === undefined
        ? ""
        : (r.requestsPerSecond / base.requestsPerSecond).toFixed(2);
      lines.push(
        `| ${target.name} | ${target.workers} | ${Math.round(r?.requestsPerSecond ?? 0)} | ${
          (r?.p50Ms ?? 0).toFixed(2)
        } | ${(r?.p99Ms ?? 0).toFixed(2)} | ${ratio} | ${target.baseline ?? ""} |`,
      );
    }
    for (
      const name of [
        "bare Deno.serve",
        "sluice own route",
        "sluice forward /v1/*",
        "nginx proxy_pass",
      ]
    ) {
      const one = summary.get(`${name}|1`);
      const n = summary.get(`${name}|${many}`);
      if (one !== undefined && n !== undefined) {
        lines.push(
          "",
          `${name}: ${many} isolates / 1 = ${
            (n.requestsPerSecond / one.requestsPerSecond).toFixed(2)
          }×`,
        );
      }
    }

    // Latency below saturation: one connection, bare vs sluice's own route, one isolate each.
    const bare = targets.find((t) => t.name === "bare Deno.serve" && t.workers === 1);
    const own = targets.find((t) => t.name === "sluice own route" && t.workers === 1);
    if (bare !== undefined && own !== undefined) {
      await wrk(bare, 1, 1, 2); // warm-up, not counted
      await wrk(own, 1, 1, 2);
      const bareLatency = await wrk(bare, 1, 1, seconds);
      const ownLatency = await wrk(own, 1, 1, seconds);
      lines.push(
        "",
        `latency at 1 connection (1 isolate): bare p50 ${bareLatency.p50Ms.toFixed(3)} ms / p99 ${
          bareLatency.p99Ms.toFixed(3)
        } ms;` +
          ` sluice own route p50 ${ownLatency.p50Ms.toFixed(3)} ms / p99 ${
            ownLatency.p99Ms.toFixed(3)
          } ms;` +
          ` added p99 ${(ownLatency.p99Ms - bareLatency.p99Ms).toFixed(3)} ms`,
      );
    }
    console.log(lines.join("\n"));
  } finally {
    for (const child of children) {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
    }
    await Promise.allSettled(children.map((c) => c.status));
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

await main();
