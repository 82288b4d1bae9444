"""The running gateway's control socket for ``weijian gateway hj212``.

A Unix domain socket beside the spool (``<spool file>.hj212.sock`` unless
``[gateway.hj212] control_socket`` says otherwise), created with mode 0600: only the account
that runs the gateway (and root) can command its loggers. One JSON request per line, one JSON
answer per line:

- ``{"op": "status"}`` -> :meth:`Hj212Listener.status`;
- ``{"op": "send", "mn": ..., "cn": ..., "cp": {"Name": "value", ...}}`` -> the request's
  :class:`~gateway.hj212_commands.CommandResult`, or ``{"error": ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from gateway.hj212_listener import Hj212Listener, NotConnected

__all__ = ["ControlServer", "ask", "cp_problem", "socket_path"]

log = logging.getLogger(__name__)

_MAX_LINE = 64 * 1024
_CN = re.compile(r"[0-9]{4}")  # fullmatch: "$" would let a trailing line break through
_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,31}")
_VALUE = re.compile(r"[^;,=&\r\n]{0,128}")


def cp_problem(cp: object) -> str | None:
    """Why ``cp`` cannot go into a request's CP (None: it can).

    A CP is ``Name=value`` fields joined by ``;`` (and ``,``, ``&&`` around it): a value holding
    one of those characters or a line break would add fields the operator did not write.
    """
    if not isinstance(cp, dict):
        return "cp must map field names to values"
    for name, value in cp.items():
        if not isinstance(name, str) or not _FIELD.fullmatch(name):
            return (f"CP field name {name!r} must be a letter, then up to 31 letters, digits or '-'")
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            return (f"CP field {name}: value {value!r} must be at most 128 characters, "
                    "without ; , = & or line breaks")
    return None


def socket_path(spool_path: Path, configured: Path | None) -> Path:
    """Where the control socket is: the configured path, else ``<spool file>.hj212.sock``."""
    return configured if configured is not None else spool_path.with_name(f"{spool_path.name}.hj212.sock")


class ControlServer:
    """Serves the control socket for one listener."""

    def __init__(self, listener: Hj212Listener, path: Path) -> None:
        self.listener = listener
        self.path = path
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind (replacing a stale socket file), readable and writable by this account only.

        A socket that cannot be made (a path over 107 bytes, a read-only folder) is logged as
        ``hj212.control_socket_failed``: the loggers' data still flows, only commands cannot be sent.
        """
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._client, path=str(self.path), limit=_MAX_LINE)
        except OSError as exc:
            log.error("hj212.control_socket_failed", extra={"path": str(self.path), "error": str(exc)})
            return
        finally:
            os.umask(old)
        log.info("hj212.control_socket", extra={"path": str(self.path)})

    async def close(self) -> None:
        """Stop serving and remove the socket file."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            answer = await self._answer(line)
            writer.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, ValueError, OSError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"error": "the request is not JSON"}
        if not isinstance(request, dict):
            return {"error": "the request is not a JSON object"}
        if request.get("op") == "status":
            return self.listener.status()
        if request.get("op") != "send":
            return {"error": f"unknown op {request.get('op')!r} (status, send)"}
        mn, cn, cp = request.get("mn"), request.get("cn"), request.get("cp", {})
        if not isinstance(mn, str) or mn not in self.listener.loggers:
            return {"error": f"MN {mn!r} is not a logger of this gateway (key 'gateway.hj212.loggers')"}
        if not isinstance(cn, str) or not _CN.fullmatch(cn):
            return {"error": f"CN {cn!r} is not four digits"}
        problem = cp_problem(cp)
        if problem is not None:
            return {"error": problem}
        try:
            result = await self.listener.command(mn, cn, cp)
        except NotConnected:
            return {"error": f"logger {mn} is not connected", "connected": False}
        return result.as_dict()


async def ask(path: Path, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Send one request to a running gateway's control socket and return its answer.

    Raises:
        OSError: no gateway is listening there (or this account may not use the socket).
        TimeoutError: no answer in ``timeout_s``.
    """
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_unix_connection(str(path), limit=_MAX_LINE)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
    answer = json.loads(line)
    assert isinstance(answer, dict)
    return answer
