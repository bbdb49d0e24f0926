"""A real llama-server with the tiny generated model, for one benchmark's duration."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


class TinyServer:
    """`with TinyServer(["--metrics"]) as url:` — started on loopback, stopped (by PID) after."""

    def __init__(self, extra: list[str] | None = None) -> None:
        self.extra = list(extra or [])

    def __enter__(self) -> str:
        from llmtop.demo.tiny_model import write_tiny_model
        from tests.realserver import find_llama_server, start_llama_server

        binary = find_llama_server()
        if binary is None:
            raise RuntimeError("no llama-server: run scripts/get-llama-server.sh")
        self._tmp = tempfile.TemporaryDirectory(prefix="llmtop-bench-")
        tmp = Path(self._tmp.name)
        model = write_tiny_model(tmp / "tiny.gguf")
        self._srv: Any = start_llama_server(binary, model, self.extra, log_dir=tmp)
        return str(self._srv.url)

    def __exit__(self, *exc: object) -> None:
        self._srv.stop()
        self._tmp.cleanup()
