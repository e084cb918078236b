"""Triton Python-backend model that runs one network of a bundle on the runtime's backends.

A repository's ``<network>/<version>/model.py`` imports :class:`TritonPythonModel` from here.
``config.pbtxt`` says which component (``v2a.component``), on which backend (``v2a.backend``:
onnxruntime CPU or CUDA, or the bundle's TensorRT engines) with how many CPU threads.

Batched networks (``max_batch_size`` > 0, :func:`.repository.batch_layout`) get every request
the dynamic batcher gathered in one ``execute`` call. Requests are grouped into shape buckets
(equal non-batch shapes, equal values of the unbatched inputs such as the denoiser's RoPE
tables); each bucket is one backend call on the rows of all its requests concatenated, and each
request gets its own rows back. Triton's statistics count one execution per ``execute`` call;
the metrics endpoint also has this model's backend calls and rows
(``v2a_network_runs_total`` / ``v2a_network_rows_total`` with a ``model`` label), which differ
from executions when one execution held several buckets.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from ..backends import load_session
from ..backends.base import Session
from ..bundle import Bundle, check_io
from .loading import ModelContext, model_context, verify_component
from .repository import BatchLayout, batch_layout
from .triton import error_response, one_line, pb_utils, read_array, response


class TritonPythonModel:
    """Triton's Python-backend entry points for one network."""

    def initialize(self, args: dict[str, str]) -> None:
        try:
            ctx = model_context(args)
            self.name = ctx.parameters["v2a.component"]
            self.spec = ctx.bundle.manifest.components[self.name]
            verify_component(ctx.bundle, self.name)
            self.session = _load(ctx, self.name)
            check_io(self.name, self.spec, self.session)
        except Exception as e:
            message = f"v2a: model {args['model_name']} refuses to load: {one_line(e)}"
            pb_utils().Logger.log_error(message)
            raise RuntimeError(message) from None
        self.layout = batch_layout(self.spec) if ctx.max_batch_size > 0 else None
        self.rank = {t.name: len(t.shape) for t in (*self.spec.inputs, *self.spec.outputs)}
        self.families, (self.runs, self.rows) = _counters(ctx.model, ctx.version)

    def execute(self, requests: list) -> list:
        if self.layout is None:
            return [self._one(r) for r in requests]
        responses: list = [None] * len(requests)
        buckets: dict[tuple, list[tuple[int, dict[str, np.ndarray]]]] = {}
        for i, request in enumerate(requests):
            try:
                feeds = self._read(request)
            except ValueError as e:
                responses[i] = error_response(f"{self.name}: {e}")
                continue
            buckets.setdefault(_bucket(feeds, self.layout), []).append((i, feeds))
        for members in buckets.values():
            for i, answer in zip([i for i, _ in members], self._run_bucket(members), strict=True):
                responses[i] = answer
        return responses

    # --- one request at a time (max_batch_size 0) -------------------------------------------

    def _one(self, request):
        try:
            feeds = {t.name: read_array(request, t.name) for t in self.spec.inputs}
            outputs = self.session.run(feeds)
            self.runs.increment(1)
            return response(outputs)
        except Exception as e:
            return error_response(f"{self.name}: {e}", internal=not isinstance(e, ValueError))

    # --- batched ------------------------------------------------------------------------------

    def _read(self, request) -> dict[str, np.ndarray]:
        """The request's feeds: batched inputs as sent ((B, 1) back to (B,)), each unbatched
        input's one value (its rows must agree)."""
        feeds = {}
        for name in self.layout.batched:
            value = read_array(request, name)
            feeds[name] = value.reshape(-1) if self.rank[name] == 1 else value
        for name in self.layout.unbatched:
            value = read_array(request, name)
            if not np.array_equal(value, np.broadcast_to(value[:1], value.shape)):
                raise ValueError(
                    f"input {name!r} has no batch axis in the graph: every row must repeat the "
                    "same value"
                )
            feeds[name] = value[0]
        return feeds

    def _run_bucket(self, members: list[tuple[int, dict[str, np.ndarray]]]) -> list:
        """One backend call on the rows of every request of a bucket; one response each."""
        first = members[0][1]
        rows = [feeds[self.layout.batched[0]].shape[0] for _, feeds in members]
        merged = dict(first)
        for name in self.layout.batched:
            merged[name] = np.concatenate([feeds[name] for _, feeds in members])  # (ΣB, ...)
        try:
            outputs = self.session.run(merged)
            self.runs.increment(1)
            self.rows.increment(sum(rows))
        except Exception as e:
            internal = not isinstance(e, ValueError)
            return [error_response(f"{self.name}: {e}", internal=internal) for _ in members]
        cuts = np.cumsum(rows)[:-1]
        split = {name: np.split(value, cuts) for name, value in outputs.items()}
        answers = []
        for k in range(len(members)):
            part = {n: v[k] for n, v in split.items()}
            part = {n: v.reshape(-1, 1) if self.rank[n] == 1 else v for n, v in part.items()}
            answers.append(response(part))
        return answers


def _counters(model: str, version: str) -> tuple[list, list]:
    """This model's backend-call and row counters on Triton's metrics endpoint, and their
    families (which must outlive them)."""
    pb = pb_utils()
    labels = {"model": model, "version": version}
    families = [
        pb.MetricFamily(name=name, description=text, kind=pb.MetricFamily.COUNTER)
        for name, text in (
            ("v2a_network_runs_total", "Backend calls of a v2a network model (one per bucket)"),
            ("v2a_network_rows_total", "Rows those calls ran (batched networks)"),
        )
    ]
    return families, [family.Metric(labels=labels) for family in families]


def _bucket(feeds: dict[str, np.ndarray], layout: BatchLayout) -> tuple:
    """Requests with equal keys can share one backend call."""
    key = [(name, feeds[name].shape[1:]) for name in layout.batched]
    for name in layout.unbatched:
        value = np.ascontiguousarray(feeds[name])
        digest = hashlib.blake2b(value.tobytes(), digest_size=16).digest()
        key.append((name, value.shape, value.dtype.str, digest))
    return tuple(key)


def _load(ctx: ModelContext, name: str) -> Session:
    """The component's session on the configured backend (device = Triton's instance)."""
    backend = ctx.parameters.get("v2a.backend", "cpu")
    threads = int(ctx.parameters.get("v2a.threads", "0")) or None
    path = ctx.bundle.path(name)
    if backend == "cuda":
        from ..backends.cuda import BoundSession, CudaOptions

        # No CUDA graph: the batcher changes the batch size from one execution to the next.
        options = CudaOptions(device_id=ctx.device_id, threads=threads, cuda_graph=False)
        return BoundSession.load(path, options)
    if backend == "tensorrt":
        from ..backends.tensorrt import load_engines

        m = ctx.bundle.manifest  # this component's engine only (the index lists every engine)
        one = Bundle(ctx.bundle.root, replace(m, components={name: m.components[name]}))
        return load_engines(one, cuda_graph=False)[name]
    return load_session(path, backend, threads=threads)
