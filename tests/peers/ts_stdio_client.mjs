#!/usr/bin/env node
// TypeScript MCP SDK 1.x client over stdio (StdioClientTransport).
//
// Usage: node ts_stdio_client.mjs [--message TEXT] [--timeout SECONDS] [--too-long BYTES]
//        -- CMD [ARGS...]
//
// Spawns CMD, connects, lists tools, calls `echo`, prints one JSON line (same shape as
// ts_client.mjs; "session_id" is always null on stdio, and so is "protocol_version": SDK 1.x
// keeps the negotiated revision on HTTP transports only). With --too-long, it first calls
// `echo` with a message of BYTES bytes, which the SDK writes with its id last, and expects it
// refused: "too_long" reports the error's code and message (the call gives up after 20 s, as
// the SDK's own RequestTimeout, -32001).

import { parseArgs } from "node:util";

const USAGE =
  "usage: ts_stdio_client.mjs [--message TEXT] [--timeout SECONDS] [--too-long BYTES] -- CMD [ARGS...]";

function die(message) {
  process.stderr.write(`ts_stdio_client: error: ${message}\n`);
  process.exit(1);
}

function parse() {
  const argv = process.argv.slice(2);
  const split = argv.indexOf("--");
  if (split < 0 || split === argv.length - 1) die(USAGE);
  let values;
  try {
    ({ values } = parseArgs({
      args: argv.slice(0, split),
      options: {
        message: { type: "string", default: "hello from ts_stdio_client" },
        timeout: { type: "string", default: "30" },
        "too-long": { type: "string" },
      },
    }));
  } catch (err) {
    die(`${err.message}\n${USAGE}`);
  }
  const timeout = Number(values.timeout);
  if (!(timeout > 0)) die(`bad --timeout ${values.timeout}`);
  const tooLong = values["too-long"] === undefined ? null : Number(values["too-long"]);
  if (tooLong !== null && !(tooLong > 0)) die(`bad --too-long ${values["too-long"]}`);
  const [command, ...args] = argv.slice(split + 1);
  return { command, args, message: values.message, timeout, tooLong };
}

async function run(options) {
  const { Client } = await import("@modelcontextprotocol/sdk/client/index.js");
  const { StdioClientTransport } = await import("@modelcontextprotocol/sdk/client/stdio.js");
  const client = new Client({ name: "shadowcat-ts-stdio-client", version: "1.0.0" });
  const transport = new StdioClientTransport({ command: options.command, args: options.args });
  await client.connect(transport);
  try {
    const tools = await client.listTools();
    let tooLong = null;
    if (options.tooLong !== null) {
      const long = { name: "echo", arguments: { message: "x".repeat(options.tooLong) } };
      const refusal = await client
        .callTool(long, undefined, { timeout: 20_000 })
        .then(() => null, (err) => err);
      if (refusal === null) throw new Error(`a call of ${options.tooLong} bytes was answered`);
      tooLong = { code: refusal.code ?? null, message: String(refusal.message) };
    }
    const result = await client.callTool({ name: "echo", arguments: { message: options.message } });
    const text = result.content.map((block) => block.text ?? "").join("");
    if (result.isError) throw new Error(`echo tool returned an error: ${text}`);
    return {
      tools: tools.tools.map((tool) => tool.name),
      echo: text,
      protocol_version: null,
      session_id: null,
      too_long: tooLong,
    };
  } finally {
    await client.close();
  }
}

const options = parse();
const timer = setTimeout(() => die(`no answer within ${options.timeout}s`), options.timeout * 1000);
try {
  const report = await run(options);
  clearTimeout(timer);
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(0);
} catch (err) {
  die(err?.stack ?? String(err));
}
