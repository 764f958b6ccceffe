#!/usr/bin/env node
// TypeScript MCP SDK client over streamable HTTP (StreamableHTTPClientTransport).
//
// Usage: node ts_client.mjs URL [--era legacy|auto|2026] [--sdk 1|2] [--terminate]
//                               [--message TEXT] [--timeout SECONDS]
//
// Connects, lists tools, calls `echo`, prints one JSON line:
// {"tools": [...], "echo": "...", "protocol_version": "...", "session_id": "..." | null}
//
// --sdk 1 is @modelcontextprotocol/sdk 1.x, the client most deployments run; it only
// knows the initialize handshake. --sdk 2 is @modelcontextprotocol/client 2.x, whose
// `versionNegotiation.mode` selects the era ('legacy' is its default too). The SDK
// defaults to 1 for --era legacy and 2 otherwise.
// Neither SDK sends DELETE on close(); --terminate calls terminateSession() first,
// as clients that end their sessions explicitly do.
//
// --sleep-ms N calls the `sleep` tool of the proxy's `mcp_echo` example instead of `echo` (its
// answer is the report's "echo").
//
// --resume (SDK 1.x) calls the slow `sleep` tool instead of `echo`, drops its connection after
// its first event, and resumes the request from a second client on the same session
// with the SDK's resumption token (`Last-Event-ID`); prints
// {"resumed": "...", "tokens": [...], "progress": [...], "session_id": "..."}.

import { parseArgs } from "node:util";

const USAGE =
  "usage: ts_client.mjs URL [--era legacy|auto|2026] [--sdk 1|2] [--terminate] [--resume] [--sleep-ms N] [--message TEXT] [--timeout SECONDS]";

function die(message) {
  process.stderr.write(`ts_client: error: ${message}\n`);
  process.exit(1);
}

function parse() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        era: { type: "string", default: "legacy" },
        sdk: { type: "string" },
        terminate: { type: "boolean", default: false },
        resume: { type: "boolean", default: false },
        "sleep-ms": { type: "string" },
        message: { type: "string", default: "hello from ts_client" },
        timeout: { type: "string", default: "30" },
      },
    });
  } catch (err) {
    die(`${err.message}\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) die(USAGE);
  const era = values.era;
  if (!["legacy", "auto", "2026"].includes(era)) die(`unknown --era ${era}\n${USAGE}`);
  const sdk = values.sdk ?? (era === "legacy" ? "1" : "2");
  if (!["1", "2"].includes(sdk)) die(`unknown --sdk ${sdk}\n${USAGE}`);
  if (sdk === "1" && era !== "legacy") die("--sdk 1 has no 2026-07-28 support; use --sdk 2");
  if (values.resume && sdk !== "1") die("--resume drives --sdk 1");
  const sleepMs = values["sleep-ms"] === undefined ? undefined : Number(values["sleep-ms"]);
  if (sleepMs !== undefined && !(sleepMs >= 0)) die(`bad --sleep-ms ${values["sleep-ms"]}`);
  const timeout = Number(values.timeout);
  if (!(timeout > 0)) die(`bad --timeout ${values.timeout}`);
  return {
    url: positionals[0],
    era,
    sdk,
    terminate: values.terminate,
    resume: values.resume,
    sleepMs,
    message: values.message,
    timeout,
  };
}

async function loadSdk(sdk, era) {
  if (sdk === "1") {
    const { Client } = await import("@modelcontextprotocol/sdk/client/index.js");
    const { StreamableHTTPClientTransport } = await import("@modelcontextprotocol/sdk/client/streamableHttp.js");
    return { Client, StreamableHTTPClientTransport, options: {} };
  }
  const { Client, StreamableHTTPClientTransport } = await import("@modelcontextprotocol/client");
  const mode = era === "2026" ? { pin: "2026-07-28" } : era;
  return { Client, StreamableHTTPClientTransport, options: { versionNegotiation: { mode } } };
}

async function run(args) {
  const { Client, StreamableHTTPClientTransport, options } = await loadSdk(args.sdk, args.era);
  const client = new Client({ name: "shadowcat-ts-client", version: "1.0.0" }, options);
  const transport = new StreamableHTTPClientTransport(new URL(args.url));
  await client.connect(transport);
  try {
    const tools = await client.listTools();
    const call =
      args.sleepMs === undefined
        ? { name: "echo", arguments: { message: args.message } }
        : { name: "sleep", arguments: { ms: args.sleepMs } };
    const result = await client.callTool(call);
    const text = result.content.map((block) => block.text ?? "").join("");
    if (result.isError) throw new Error(`${call.name} tool returned an error: ${text}`);
    return {
      tools: tools.tools.map((tool) => tool.name),
      echo: text,
      protocol_version: client.getNegotiatedProtocolVersion?.() ?? transport.protocolVersion ?? null,
      session_id: transport.sessionId ?? null,
    };
  } finally {
    if (args.terminate && transport.sessionId) await transport.terminateSession();
    await client.close();
  }
}

// A slow call whose connection is dropped after its first progress event, then
// resumed from a second client on the same session, as an application that
// restarted would.
async function resume(args) {
  const { Client, StreamableHTTPClientTransport } = await loadSdk("1", "legacy");
  const { CallToolResultSchema } = await import("@modelcontextprotocol/sdk/types.js");
  const info = { name: "shadowcat-ts-client", version: "1.0.0" };
  const call = { name: "sleep", arguments: { ms: 1500 } };
  const first = new Client(info);
  const firstTransport = new StreamableHTTPClientTransport(new URL(args.url));
  await first.connect(firstTransport);
  const sessionId = firstTransport.sessionId;
  const tokens = [];
  const progress = [];
  let dropped;
  const firstToken = new Promise((resolve) => (dropped = resolve));
  const abandoned = first
    .callTool(call, CallToolResultSchema, {
      onprogress: (p) => progress.push(p.progress),
      onresumptiontoken: (token) => {
        tokens.push(token);
        dropped(token);
      },
    })
    .then(
      () => "answered before the drop",
      () => null,
    );
  const token = await firstToken;
  // Closing aborts the call's connection: the rest of its stream is lost here.
  await firstTransport.close();
  if ((await abandoned) !== null) throw new Error("the call was answered before its connection dropped");
  const second = new Client(info);
  const secondTransport = new StreamableHTTPClientTransport(new URL(args.url), { sessionId });
  // A transport with a session id skips the handshake: the session goes on.
  await second.connect(secondTransport);
  const result = await second.request({ method: "tools/call", params: call }, CallToolResultSchema, {
    resumptionToken: token,
    onresumptiontoken: (t) => tokens.push(t),
  });
  await secondTransport.close();
  return {
    resumed: result.content.map((block) => block.text ?? "").join(""),
    tokens,
    progress,
    session_id: sessionId ?? null,
  };
}

const args = parse();
const timer = setTimeout(() => die(`timed out after ${args.timeout}s`), args.timeout * 1000);
try {
  const out = await (args.resume ? resume(args) : run(args));
  clearTimeout(timer);
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
} catch (err) {
  // fetch() hides the socket error (ECONNREFUSED, ...) in `cause`.
  const cause = err?.cause ? ` (${err.cause.code ?? err.cause.message})` : "";
  die(err instanceof Error ? `${err.name}: ${err.message}${cause}` : String(err));
}
