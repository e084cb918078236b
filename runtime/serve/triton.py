"""Inside Triton's Python backend: tensors in and out, error responses, BLS calls as a Session.

Only the models of a repository import this module (in the Python backend's stub process, where
``triton_python_backend_utils`` exists); it is imported lazily so that the rest of
``v2a_runtime.serve`` works anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import ComponentSpec, TensorInfo
from .repository import BatchLayout


class RemoteError(RuntimeError):
    """A model called through BLS answered with an error."""


def pb_utils():
    """Triton's ``triton_python_backend_utils`` (exists only inside the stub process)."""
    import triton_python_backend_utils

    return triton_python_backend_utils


def read_array(request, name: str) -> np.ndarray | None:
    """Input ``name`` as a numpy view of the request's memory, or None when not sent."""
    tensor = pb_utils().get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def read_bytes(request, name: str) -> list[bytes] | None:
    """A BYTES input's elements, or None when not sent."""
    tensor = pb_utils().get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    return [bytes(b) for b in tensor.as_numpy().reshape(-1)]


def tensor(name: str, array: np.ndarray):
    """A response or request tensor holding ``array`` (copied by Triton when sent)."""
    return pb_utils().Tensor(name, np.ascontiguousarray(array))


def response(arrays: dict[str, np.ndarray]):
    return pb_utils().InferenceResponse(output_tensors=[tensor(n, a) for n, a in arrays.items()])


def error_response(message: str, *, internal: bool = False):
    """An error response with one line (INVALID_ARG: the request's fault; INTERNAL: ours)."""
    pb = pb_utils()
    code = pb.TritonError.INTERNAL if internal else pb.TritonError.INVALID_ARG
    return pb.InferenceResponse(error=pb.TritonError(one_line(message), code))


def one_line(message: str) -> str:
    return " ".join(str(message).split()) or "unknown error"


@dataclass(frozen=True)
class RemoteSession:
    """A repository model called through BLS, behind the runtime's Session protocol, so that
    the pipeline's loop runs unchanged: each ``run`` is one Triton request per ``max_batch``
    rows (batched models), which the model's dynamic batcher may merge with other requests'."""

    model: str
    spec: ComponentSpec
    layout: BatchLayout | None  # None: the model takes whole requests (max_batch_size 0)
    max_batch: int = 0

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        return self.spec.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        return self.spec.outputs

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.layout is None:
            return self._call(feeds)
        rows = feeds[self.layout.batched[0]].shape[0]
        parts = [
            self._call(self._rows(feeds, lo, min(rows, lo + self.max_batch)))
            for lo in range(0, rows, self.max_batch)
        ]
        if len(parts) == 1:
            return parts[0]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _rows(self, feeds: dict[str, np.ndarray], lo: int, hi: int) -> dict[str, np.ndarray]:
        """Rows lo:hi of the batched inputs; each unbatched input repeated on a batch axis."""
        part = {}
        for name, value in feeds.items():
            if name in self.layout.batched:
                value = value[lo:hi]
                if value.ndim == 1:
                    value = value[:, None]  # (B,) travels as (B, 1)
            else:
                value = np.broadcast_to(value, (hi - lo, *value.shape))  # (b, ...)
            part[name] = value
        return part

    def _call(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pb = pb_utils()
        request = pb.InferenceRequest(
            model_name=self.model,
            inputs=[tensor(n, v) for n, v in feeds.items()],
            requested_output_names=[t.name for t in self.spec.outputs],
        )
        answer = request.exec()
        if answer.has_error():
            raise RemoteError(f"model {self.model}: {one_line(answer.error().message())}")
        out = {}
        for t in self.spec.outputs:
            value = np.array(pb.get_output_tensor_by_name(answer, t.name).as_numpy())  # a copy
            out[t.name] = value.reshape(-1) if self.layout and len(t.shape) == 1 else value
        return out
