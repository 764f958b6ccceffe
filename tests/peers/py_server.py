#!/usr/bin/env python3
"""Dual-era MCP server built on the Python SDK, with an `echo` tool like server-everything's.

Usage: py_server.py stdio
       py_server.py http --port PORT [--host 127.0.0.1] [--path /mcp] [--idle-timeout SECONDS] [--json-response]

server-everything (TypeScript SDK 1.x) only speaks the handshake era; this server
also answers 2026-07-28 requests (`server/discover`, no session id) on the same
endpoint, so the proxy can be tested against both eras.
"""

import argparse

from mcp.server.mcpserver import MCPServer

server = MCPServer("shadowcat-py-peer", version="1.0.0", log_level="WARNING")


@server.tool(description="Echoes back the input string")
def echo(message: str) -> str:
    return f"Echo: {message}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="transport", required=True)
    sub.add_parser("stdio")
    http = sub.add_parser("http")
    http.add_argument("--host", default="127.0.0.1")
    http.add_argument("--port", type=int, required=True)
    http.add_argument("--path", default="/mcp")
    # Short idle timeouts let tests watch a legacy session expire and answer 404.
    http.add_argument("--idle-timeout", type=float, default=None)
    http.add_argument("--json-response", action="store_true", help="answer POSTs with JSON instead of SSE")
    args = parser.parse_args()

    if args.transport == "stdio":
        server.run("stdio")
        return
    extra = {} if args.idle_timeout is None else {"session_idle_timeout": args.idle_timeout}
    server.run(
        "streamable-http",
        host=args.host,
        port=args.port,
        streamable_http_path=args.path,
        json_response=args.json_response,
        **extra,
    )


if __name__ == "__main__":
    main()
