"""Send a video to a v2a Triton server (``tritonclient``, the ``[serve]`` extra).

``ServerClient.connect(url)`` takes ``http://host:8000`` (or ``host:8000``) or
``grpc://host:8001``; :meth:`ServerClient.generate` sends one request of the ``v2a`` model with
the options of :class:`~v2a_runtime.pipeline.GenerateOptions` that were set and returns a
:class:`ServerResult`. Errors are :class:`ServerRequestError` (the server refused the request:
its one-line reason) or :class:`ServerUnavailable` (nothing answered at the URL).
A client holds one connection: use one per thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..pipeline import GenerateOptions
from .repository import BLS_MODEL

# GenerateOptions field -> (input name, Triton type, numpy dtype); None dtype: BYTES (text)
_INPUTS = {
    "prompt": ("prompt", "BYTES", None),
    "negative_prompt": ("negative_prompt", "BYTES", None),
    "seed": ("seed", "INT64", np.int64),
    "tracks": ("tracks", "INT32", np.int32),
    "start": ("start", "FP32", np.float32),
    "duration": ("duration", "FP32", np.float32),
    "steps": ("steps", "INT32", np.int32),
    "cfg": ("cfg", "FP32", np.float32),
    "solver": ("solver", "BYTES", None),
    "grid": ("grid", "BYTES", None),
}
OUTPUTS = ("audio", "sample_rate", "watermark_payload", "muxed")


class ServerRequestError(ValueError):
    """The server answered the request with an error (its message, one line)."""


class ServerUnavailable(ConnectionError):
    """No v2a server answered at the URL."""


@dataclass(frozen=True)
class ServerResult:
    audio: np.ndarray  # float32 (K, W)
    sample_rate: int
    payloads: tuple[int, ...]  # the watermark payload of each track
    muxed: bytes  # the muxed file when a container was asked for, else b""


@dataclass(frozen=True)
class ModelStats:
    """Cumulative counters of one model from Triton's statistics extension."""

    requests: int  # successful requests (inference_stats.success.count)
    failures: int
    inferences: int  # rows: the sum of the requests' batch sizes
    executions: int  # model executions: fewer than requests when the batcher merged some


class ServerClient:
    """One connection to a v2a Triton server. Build with :meth:`connect`."""

    def __init__(self, module, client, url: str) -> None:
        self._module, self._client, self.url = module, client, url

    @classmethod
    def connect(cls, url: str, *, timeout: float = 600.0) -> ServerClient:
        """A client for ``url`` (``http://``, ``grpc://`` or ``host:port`` = HTTP)."""
        scheme, _, address = url.rpartition("://")
        if scheme not in ("", "http", "grpc"):
            raise ValueError(f"server URL {url!r}: use http://HOST:PORT or grpc://HOST:PORT")
        try:
            if scheme == "grpc":
                import tritonclient.grpc as module

                client = module.InferenceServerClient(address)
            else:
                import tritonclient.http as module

                client = module.InferenceServerClient(
                    address, connection_timeout=timeout, network_timeout=timeout
                )
        except ImportError as e:
            raise ImportError(
                f"talking to a server needs tritonclient ({e}); pip install 'v2a-export[serve]'"
            ) from e
        return cls(module, client, url)

    def ready(self) -> bool:
        """True when the server and the v2a model are ready."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(BLS_MODEL))
        except (InferenceServerException, OSError):
            return False

    def generate(
        self,
        video: bytes | str | Path,
        options: GenerateOptions,
        *,
        sent: tuple[str, ...] | None = None,
        container: str | None = None,
    ) -> ServerResult:
        """Generate on the server. ``sent``: the option fields to send (default: those that
        differ from GenerateOptions' defaults; the server fills the rest as ``v2a generate``
        would). ``container`` (e.g. "mp4"): also return the muxed file."""
        data = video if isinstance(video, bytes) else Path(video).read_bytes()
        defaults = GenerateOptions()
        if sent is None:
            sent = tuple(f for f in _INPUTS if getattr(options, f) != getattr(defaults, f))
        inputs = [self._input("video", "BYTES", np.array([data], dtype=np.object_))]
        if "prompt" not in sent:  # required by the model
            sent = ("prompt", *sent)
        for field in sent:
            name, kind, dtype = _INPUTS[field]
            value = getattr(options, field)
            if value is None:
                continue
            array = (
                np.array([str(value).encode("utf-8")], dtype=np.object_)
                if dtype is None
                else np.array([value], dtype=dtype)
            )
            inputs.append(self._input(name, kind, array))
        if container is not None:
            inputs.append(self._input("container", "BYTES", np.array([container.encode()], object)))
        outputs = [self._module.InferRequestedOutput(n) for n in OUTPUTS]
        answer = self._call(self._client.infer, BLS_MODEL, inputs, outputs=outputs)
        return ServerResult(
            audio=answer.as_numpy("audio"),
            sample_rate=int(answer.as_numpy("sample_rate")[0]),
            payloads=tuple(int(p) for p in answer.as_numpy("watermark_payload")),
            muxed=bytes(answer.as_numpy("muxed").reshape(-1)[0]),
        )

    def variant(self) -> str:
        """The served bundle's variant (for output metadata)."""
        config = self._call(self._client.get_model_config, BLS_MODEL)
        if not isinstance(config, dict):  # gRPC: ModelConfigResponse
            from google.protobuf.json_format import MessageToDict

            config = MessageToDict(config.config, preserving_proto_field_name=True)
        return config.get("parameters", {}).get("v2a.variant", {}).get("string_value", "served")

    def stats(self, model: str) -> ModelStats:
        """The model's cumulative counters (all versions)."""
        raw = self._call(self._client.get_inference_statistics, model)
        if not isinstance(raw, dict):  # gRPC answers a protobuf message
            from google.protobuf.json_format import MessageToDict

            raw = MessageToDict(raw, preserving_proto_field_name=True)
        totals = dict.fromkeys(("requests", "failures", "inferences", "executions"), 0)
        for m in raw.get("model_stats", []):
            s = m.get("inference_stats", {})
            totals["requests"] += int(s.get("success", {}).get("count", 0))
            totals["failures"] += int(s.get("fail", {}).get("count", 0))
            totals["inferences"] += int(m.get("inference_count", 0))
            totals["executions"] += int(m.get("execution_count", 0))
        return ModelStats(**totals)

    def close(self) -> None:
        self._client.close()

    def _input(self, name: str, kind: str, array: np.ndarray):
        tensor = self._module.InferInput(name, list(array.shape), kind)
        tensor.set_data_from_numpy(array)
        return tensor

    def _call(self, method, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return method(*args, **kwargs)
        except InferenceServerException as e:
            message = " ".join(str(e.message() or e).split())
            if _unreachable(message):
                raise ServerUnavailable(f"no v2a server at {self.url} ({message})") from None
            raise ServerRequestError(f"server: {message}") from None
        except OSError as e:
            raise ServerUnavailable(f"no v2a server at {self.url} ({e})") from None


def network_counters(metrics_url: str) -> dict[str, tuple[int, int]]:
    """``{model: (backend calls, rows)}`` of the network models, from the Prometheus text at
    ``metrics_url`` (Triton's metrics endpoint, e.g. http://HOST:8002/metrics)."""
    import re
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    counts: dict[str, list[int]] = {}
    pattern = re.compile(r"^v2a_network_(runs|rows)_total\{([^}]*)\}\s+([0-9.e+]+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            model = re.search(r'model="([^"]*)"', match.group(2)).group(1)
            slot = counts.setdefault(model, [0, 0])
            slot[0 if match.group(1) == "runs" else 1] += int(float(match.group(3)))
    return {model: (runs, rows) for model, (runs, rows) in counts.items()}


def _unreachable(message: str) -> bool:
    lowered = message.lower()
    signs = ("failed to connect", "connection refused", "unavailable", "timed out")
    return any(s in lowered for s in signs)
