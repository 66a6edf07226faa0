/**
 * The baseline: bare `Deno.serve` answering "ok", on N isolates sharing the
 * port with reusePort (like sluice's data plane). Also the upstream that
 * nginx and sluice forward to in `http_bench.ts`.
 *
 *   deno run -A --unstable-net bench/_bare_server.ts PORT [WORKERS]
 */

const body = new TextEncoder().encode("ok");

function serve(port: number, reusePort: boolean): Deno.HttpServer {
  return Deno.serve(
    { port, hostname: "127.0.0.1", reusePort, onListen: () => {} },
    () => new Response(body, { headers: { "content-type": "text/plain" } }),
  );
}

if ("WorkerGlobalScope" in globalThis) {
  // A worker isolate: told its port by the first message.
  const scope = globalThis as unknown as {
    onmessage: ((event: MessageEvent<number>) => void) | null;
    postMessage(message: string): void;
  };
  scope.onmessage = (event) => {
    serve(event.data, true);
    scope.postMessage("listening");
  };
} else {
  const port = Number(Deno.args[0] ?? "8000");
  const workers = Number(Deno.args[1] ?? "1");
  serve(port, workers > 1);
  for (let i = 1; i < workers; i++) {
    const worker = new Worker(import.meta.url, { type: "module" });
    await new Promise<void>((resolve) => {
      worker.onmessage = () => resolve();
      worker.postMessage(port);
    });
  }
  console.log(`bare listening on ${port} with ${workers} isolate(s)`);
}
