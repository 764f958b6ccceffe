#!/usr/bin/env python3
"""Python MCP SDK client over stdio.

Usage: py_stdio_client.py [--era auto|legacy|2026] [--message TEXT] [--timeout SECONDS] -- CMD [ARGS...]

Spawns CMD, connects, lists tools, calls `echo`, prints one JSON line (same shape as
py_client.py; "session_id" is always null on stdio). CMD inherits only the SDK's default
environment (PATH, HOME, ...), not the caller's whole environment.
"""

import argparse
import json
import sys

import anyio
from mcp import Client, StdioServerParameters

from _peer_util import fail, report

ERA_MODES = {"auto": "auto", "legacy": "legacy", "2026": "2026-07-28"}


async def run(args: argparse.Namespace) -> dict:
    params = StdioServerParameters(command=args.command[0], args=args.command[1:])
    with anyio.fail_after(args.timeout):
        async with Client(params, mode=ERA_MODES[args.era]) as client:
            tools = await client.list_tools()
            result = await client.call_tool("echo", {"message": args.message})
            return report(tools, result, client.protocol_version, None)


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        sys.exit(f"usage: {sys.argv[0]} [--era auto|legacy|2026] [--message TEXT] [--timeout SECONDS] -- CMD [ARGS...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--era", choices=sorted(ERA_MODES), default="auto")
    parser.add_argument("--message", default="hello from py_stdio_client")
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args(argv[:split])
    args.command = argv[split + 1 :]
    try:
        out = anyio.run(run, args)
    except BaseException as exc:  # noqa: BLE001 - every failure must become one stderr line and exit 1
        fail("py_stdio_client", exc)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
