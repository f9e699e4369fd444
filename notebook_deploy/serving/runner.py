"""Run the app of a bundle under uvicorn on a socket bound here, so that port 0 gives a free port."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

import uvicorn

from ..bundle import Bundle
from .app import create_app
from .limits import DEFAULT_MAX_BODY_BYTES

# Set by ``Server`` in the child's environment: the server stops when that process is gone.
PARENT_PID_VARIABLE = "NOTEBOOK_DEPLOY_PARENT_PID"


def run(
    bundle: Bundle,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    ready_file: str | os.PathLike[str] | None = None,
    on_ready: Callable[[str], None] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    log_level: str = "info",
) -> None:
    """Serve ``bundle`` until interrupted. Once requests are answered, its URL is written to
    ``ready_file`` (as JSON) and passed to ``on_ready``."""
    app = create_app(bundle, max_body_bytes=max_body_bytes)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    url_host = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{url_host}:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=10))
    threading.Thread(target=_announce, args=(server, url, ready_file, on_ready), daemon=True).start()
    parent = os.environ.get(PARENT_PID_VARIABLE)
    if parent:
        threading.Thread(target=_exit_with_parent, args=(server, int(parent)), daemon=True).start()
    server.run(sockets=[sock])


def _announce(server: uvicorn.Server, url: str, ready_file: str | os.PathLike[str] | None,
              on_ready: Callable[[str], None] | None) -> None:
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.01)
    if ready_file is not None:
        path = Path(ready_file)
        temporary = path.with_name(path.name + ".part")
        temporary.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        os.replace(temporary, path)
    if on_ready is not None:
        on_ready(url)


def _exit_with_parent(server: uvicorn.Server, parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    server.should_exit = True
