"""Output helpers shared by the Python client drivers."""

import sys
from typing import NoReturn


def report(tools, result, protocol_version, session_id) -> dict:
    text = "".join(getattr(block, "text", "") for block in result.content)
    if result.is_error:
        raise RuntimeError(f"echo tool returned an error: {text}")
    return {
        "tools": [tool.name for tool in tools.tools],
        "echo": text,
        "protocol_version": protocol_version,
        "session_id": session_id,
    }


def _leaves(exc: BaseException):
    # anyio task groups wrap the real failure in (nested) exception groups.
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def fail(prog: str, exc: BaseException) -> NoReturn:
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    for leaf in _leaves(exc):
        detail = str(leaf) or ("no answer within --timeout" if isinstance(leaf, TimeoutError) else "")
        print(f"{prog}: error: {type(leaf).__name__}: {detail}", file=sys.stderr)
    sys.exit(1)
