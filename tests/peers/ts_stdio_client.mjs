#!/usr/bin/env node
// TypeScript MCP SDK 1.x client over stdio (StdioClientTransport).
//
// Usage: node ts_stdio_client.mjs [--message TEXT] [--timeout SECONDS] -- CMD [ARGS...]
//
// Spawns CMD, connects, lists tools, calls `echo`, prints one JSON line (same shape as
// ts_client.mjs; "session_id" is always null on stdio, and so is "protocol_version": SDK 1.x
// keeps the negotiated revision on HTTP transports only).

import { parseArgs } from "node:util";

const USAGE = "usage: ts_stdio_client.mjs [--message TEXT] [--timeout SECONDS] -- CMD [ARGS...]";

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
      },
    }));
  } catch (err) {
    die(`${err.message}\n${USAGE}`);
  }
  const timeout = Number(values.timeout);
  if (!(timeout > 0)) die(`bad --timeout ${values.timeout}`);
  const [command, ...args] = argv.slice(split + 1);
  return { command, args, message: values.message, timeout };
}

async function run(options) {
  const { Client } = await import("@modelcontextprotocol/sdk/client/index.js");
  const { StdioClientTransport } = await import("@modelcontextprotocol/sdk/client/stdio.js");
  const client = new Client({ name: "shadowcat-ts-stdio-client", version: "1.0.0" });
  const transport = new StdioClientTransport({ command: options.command, args: options.args });
  await client.connect(transport);
  try {
    const tools = await client.listTools();
    const result = await client.callTool({ name: "echo", arguments: { message: options.message } });
    const text = result.content.map((block) => block.text ?? "").join("");
    if (result.isError) throw new Error(`echo tool returned an error: ${text}`);
    return {
      tools: tools.tools.map((tool) => tool.name),
      echo: text,
      protocol_version: null,
      session_id: null,
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
