"""A running v2a Triton server as a benchmark target (``v2a bench --server URL``).

Each query sends one request to the server's ``v2a`` model (the video file's bytes, the prompt
and the sampler options), exactly what ``v2a generate --server`` sends; the server decodes,
generates and watermarks. Only the round trip is timed (stage ``total``): the server's own
stage times are in its metrics. One client per worker thread (a client holds one connection).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace

from ..pipeline import GenerateOptions
from .config import BenchError
from .workload import Request


@dataclass
class Remote:
    url: str
    videos: list[bytes]
    options: list[GenerateOptions]
    clients: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, url: str, requests: list[Request], options: GenerateOptions) -> Remote:
        try:
            import tritonclient.http  # noqa: F401 -- ServerClient's dependency
        except ImportError:
            raise BenchError("--server needs tritonclient: pip install 'v2a-export[serve]'"
                             ) from None
        remote = cls(url, [r.path.read_bytes() for r in requests],
                     [replace(options, prompt=r.prompt, negative_prompt=r.negative_prompt)
                      for r in requests])
        if not remote.client().ready():
            remote.close()
            raise BenchError(f"{url}: the server or its v2a model is not ready")
        return remote

    def client(self):
        from ..serve.client import ServerClient

        c = getattr(self._local, "client", None)
        if c is None:
            c = self._local.client = ServerClient.connect(self.url)
            with self._lock:
                self.clients.append(c)
        return c

    def variant(self) -> str:
        return self.client().variant()

    def serve(self, index: int, _mux_dir=None) -> tuple[dict[str, float], int]:
        t0 = time.perf_counter()
        self.client().generate(self.videos[index], self.options[index])
        return {"total": time.perf_counter() - t0}, 0

    def close(self) -> None:
        with self._lock:
            for c in self.clients:
                c.close()
            self.clients.clear()


__all__ = ["Remote"]
