"""Run an ASGI app in N uvicorn worker processes sharing one listening socket, with TCP_NODELAY.

``uvicorn --workers N`` binds its listener with ``proto=0``; accepted sockets inherit it and
asyncio then leaves Nagle's algorithm on, so every keep-alive request after the first waits
~40 ms for the client's delayed ACK on Linux (uvicorn issue #3149). The benchmark would
measure that, not the SDK. This launcher binds with ``IPPROTO_TCP`` and forks the workers.

Usage: ``python -m benchmarks._multiworker MODULE:APP PORT WORKERS``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

import uvicorn


def main(argv: list[str]) -> int:
    target, port, workers = argv[0], int(argv[1]), int(argv[2])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    sock.set_inheritable(True)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            config = uvicorn.Config(target, log_level="warning", access_log=False, lifespan="on")
            uvicorn.Server(config).run(sockets=[sock])
            os._exit(0)
        children.append(pid)

    def stop(signum: int, _frame: object) -> None:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    for pid in children:
        _, code = os.waitpid(pid, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
