#!/usr/bin/env python3
"""Python MCP SDK client over streamable HTTP.

Usage: py_client.py URL [--era auto|legacy|2026] [--message TEXT] [--timeout SECONDS]

Connects, lists tools, calls `echo`, prints one JSON line:
{"tools": [...], "echo": "...", "protocol_version": "...", "session_id": "..." | null}

--era maps onto the SDK's `Client(mode=...)`: `auto` (the SDK default) probes
`server/discover` and falls back to `initialize`; `legacy` sends `initialize`
only; `2026` pins 2026-07-28 with no probe and no fallback.
"""

import argparse
import json
import sys

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from _peer_util import fail, report

ERA_MODES = {"auto": "auto", "legacy": "legacy", "2026": "2026-07-28"}


async def run(args: argparse.Namespace) -> dict:
    seen = {"session_id": None}

    # The SDK does not expose the session id through `Client`; read it off the wire instead.
    async def capture(response: httpx2.Response) -> None:
        sid = response.headers.get("mcp-session-id")
        if sid:
            seen["session_id"] = sid

    # Same timeouts as the SDK's own default client (long read for SSE streams).
    http = httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=300.0), event_hooks={"response": [capture]})
    async with http:
        transport = streamable_http_client(args.url, http_client=http)
        with anyio.fail_after(args.timeout):
            async with Client(transport, mode=ERA_MODES[args.era]) as client:
                tools = await client.list_tools()
                result = await client.call_tool("echo", {"message": args.message})
                return report(tools, result, client.protocol_version, seen["session_id"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--era", choices=sorted(ERA_MODES), default="auto")
    parser.add_argument("--message", default="hello from py_client")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    try:
        out = anyio.run(run, args)
    except BaseException as exc:  # noqa: BLE001 - every failure must become one stderr line and exit 1
        fail("py_client", exc)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
