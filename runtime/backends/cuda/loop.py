"""Device-resident sampling: x, the conditions and the velocity stay on the device.

:class:`DeviceSampler` drives the denoiser through IO binding (:class:`BoundSession`):

- the conditions are copied to the device once per window and stay bound;
- the denoiser reads x from one fixed buffer ``X`` and writes the velocity into one fixed
  buffer ``V``, so its binding never changes and, on CUDA, onnxruntime captures it as a CUDA
  graph on the first runs and replays it on every later step (one graph per shape: the
  session is loaded with the window's dims fixed, which also folds its shape subgraphs);
- a packaged step graph (``data/step_graphs``, see ``scripts/make_step_graphs.py``) does the
  classifier-free-guidance combine and the Euler update on the device. The state ping-pongs
  between two buffers ``S0``/``S1`` (a graph never writes the buffer it reads) and the step
  also writes the denoiser's next input into ``X``;
- per step only two tiny host writes remain: t (2K floats, into ``T``) and dt (one float).

Why a step graph rather than a fused denoiser+update graph: the denoiser graph stays exactly
the exported (and parity-gated) file, any solver can reuse the captured denoiser, and the step
is five elementwise kernels whose launch cost is negligible next to the denoiser.

Solvers: Euler runs entirely on the device. The multistep and two-stage solvers
(``v2a_runtime.sampling``) combine velocities from several evaluations; for them each
evaluation uploads x, replays the captured denoiser, combines CFG on the device and downloads
the guided velocity (K·L·C floats), and the numpy solver does the update: same bits as the
plain path, conditions still resident.

Guarding against silent failures (spec/deployment.md §4 row 34, a capture that "succeeded"
and replayed nothing): every run's status is checked (:meth:`BoundSession.run_bound`), and the
first :data:`CANARY_RUNS` denoiser runs of every loaded shape run on a velocity buffer filled
with NaN; a run that leaves any NaN there (did not write its output) is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ... import sampling
from ...config import TensorInfo
from ...guidance import is_guided
from ..base import BackendError, SampleRequest
from .session import BoundSession, CudaOptions

_LOGGER = logging.getLogger(__name__)

STEP_GRAPHS = Path(__file__).resolve().parents[2] / "data" / "step_graphs"
CANARY_RUNS = 4  # onnxruntime captures after two warm-up runs; cover capture and first replay
_TAG = {"float32": "f32", "float16": "f16"}


@dataclass
class _Shape:
    """The denoiser loaded for one set of dims, with its bound device buffers. A captured CUDA
    graph replays the addresses it was captured with, so these buffers live as long as the
    session and every call (every window of that shape) writes into them in place."""

    session: BoundSession
    X: object  # OrtValue (rows, L, C): the denoiser's x
    T: object  # OrtValue (rows,): t
    V: object  # OrtValue (rows, L, C): the velocity
    conds: dict  # name -> OrtValue, the conditions
    binding: object  # the IOBinding over all of them
    runs: int = 0

    @classmethod
    def create(cls, session: BoundSession, feeds: Mapping[str, np.ndarray]) -> _Shape:
        buffers = {t.name: session.empty(feeds[t.name].shape, t.dtype) for t in session.inputs}
        v = session.outputs[0]
        V = session.empty(feeds["x"].shape, v.dtype)
        binding = session.binding(buffers, {v.name: V})
        conds = {n: b for n, b in buffers.items() if n not in ("x", "t")}
        return cls(session, buffers["x"], buffers["t"], V, conds, binding)


@dataclass
class DeviceSampler:
    """Samples from a denoiser graph on one device. Build with :meth:`load`; one instance
    serves every window (a session per distinct shape is loaded on first use and kept)."""

    path: Path
    options: CudaOptions
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    steps_cfg: BoundSession
    steps_plain: BoundSession
    _shapes: dict[tuple, _Shape] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: str | Path, options: CudaOptions, inputs, outputs) -> DeviceSampler:
        """Load the step graphs matching the denoiser's x/velocity types."""
        types = {t.name: t.dtype for t in (*inputs, *outputs)}
        x, v = types.get("x"), types.get("velocity")
        if x not in _TAG or v not in _TAG:
            raise BackendError(
                f"{Path(path).name}: device sampling needs float32/float16 x and velocity, "
                f"got {x}/{v}"
            )
        plain = CudaOptions(**{**options.__dict__, "cuda_graph": False})
        suffix = f"{_TAG[v]}_{_TAG[x]}.onnx"
        return cls(
            path=Path(path),
            options=options,
            inputs=tuple(inputs),
            outputs=tuple(outputs),
            steps_cfg=BoundSession.load(STEP_GRAPHS / f"cfg_step_{suffix}", plain),
            steps_plain=BoundSession.load(STEP_GRAPHS / f"plain_step_{suffix}", plain),
        )

    def _dtype(self, name: str) -> str:
        return next(t.dtype for t in (*self.inputs, *self.outputs) if t.name == name)

    def _denoiser(self, feeds: Mapping[str, np.ndarray]) -> _Shape:
        """The denoiser session with every symbolic input dim fixed to this call's size."""
        dims: dict[str, int] = {}
        for t in self.inputs:
            shape = feeds[t.name].shape
            for i, d in enumerate(t.shape):
                if isinstance(d, str) and d != "?":
                    dims[d] = int(shape[i])
        key = tuple(sorted(dims.items()))
        if key not in self._shapes:
            _LOGGER.debug("loading %s for %s", self.path.name, dims)
            try:
                session = BoundSession.load(self.path, self.options, static_dims=dims)
            except BackendError as e:
                if not (self.options.cuda_graph and self.options.device == "cuda"):
                    raise
                # onnxruntime refuses capture at load (a node on the CPU, a Memcpy): run the
                # same loop without the graph, and say so
                _LOGGER.warning("%s: CUDA graph unavailable, running without: %s",
                                self.path.name, e)  # fmt: skip
                plain = CudaOptions(**{**self.options.__dict__, "cuda_graph": False})
                session = BoundSession.load(self.path, plain, static_dims=dims)
            self._shapes[key] = _Shape.create(session, feeds)
        return self._shapes[key]

    def __call__(self, r: SampleRequest) -> tuple[np.ndarray, int]:
        """The :class:`~v2a_runtime.backends.base.Sampler` contract. The Euler path calls
        ``callback(i, t, None)``: the state stays on the device."""
        if r.solver != sampling.MULTISTEP:
            sampling.get_solver(r.solver)  # ValueError naming the solvers
        t = [float(v) for v in np.asarray(r.ts, dtype=np.float64)]
        w = r.cfg if is_guided(r.cfg) else None
        loop = _Loop(self, np.ascontiguousarray(r.x, dtype=np.float32), r.conditions, w)
        if r.solver == "euler" and r.weights is None:
            out = loop.euler(t, r.callback)
        else:
            out = sampling.integrate(loop.velocity, r.x, r.ts, solver=r.solver,
                                     weights=r.weights, callback=r.callback)  # fmt: skip
        return out, loop.evaluations


    def bound_denoiser(
        self, x: np.ndarray, conditions: Mapping[str, np.ndarray], cfg: float
    ) -> Callable[[], None]:
        """One run of the bound (on CUDA: captured) denoiser at the shapes of ``x`` and
        ``conditions``, as a function: times the replay alone (benchmarks/gpu.py)."""
        loop = _Loop(self, np.ascontiguousarray(x, dtype=np.float32), conditions,
                     cfg if is_guided(cfg) else None)  # fmt: skip
        loop._denoise(0.5)  # warm: the first runs capture
        return lambda: loop.shape.session.run_bound(loop.den_binding)


class _Loop:
    """The device buffers and bindings of one sampling call."""

    def __init__(self, owner: DeviceSampler, x0: np.ndarray, conditions, cfg: float | None):
        self.owner = owner
        self.k = k = x0.shape[0]
        self.cfg = cfg
        rows = 2 * k if cfg is not None else k
        xdt, vdt = owner._dtype("x"), owner._dtype("velocity")
        self.xdt = xdt
        feeds = {**conditions, "x": np.zeros((rows, *x0.shape[1:]), np.float32),
                 "t": np.zeros(rows, np.float32)}  # fmt: skip
        self.shape = shape = owner._denoiser(feeds)
        self.X, self.T, self.V = shape.X, shape.T, shape.V
        self.tdt, self.vdt = owner._dtype("t"), vdt
        for name, value in conditions.items():  # in place: the captured addresses stay valid
            want = _NUMPY_OF.get(_declared(owner.inputs, name), value.dtype)
            shape.conds[name].update_inplace(np.ascontiguousarray(value, dtype=want))
        self.den_binding = shape.binding
        step = owner.steps_cfg if cfg is not None else owner.steps_plain
        self.step = step
        self.S = [step.empty(x0.shape, "float32"), step.empty(x0.shape, "float32")]
        self.G = step.empty(x0.shape, "float32")
        self.DT = step.to_device(np.zeros(1, np.float32))
        scalars = {"dt": self.DT}
        if cfg is not None:
            scalars["w"] = step.to_device(np.array([cfg], np.float32))
            scalars["w_uncond"] = step.to_device(np.array([1.0 - cfg], np.float32))
        self.step_bindings = [
            step.binding({"x": self.S[i], "velocity": self.V, **scalars},
                         {"guided": self.G, "x_next": self.S[1 - i], "x_den": self.X})
            for i in (0, 1)
        ]  # fmt: skip
        self.S[0].update_inplace(x0)
        self.X.update_inplace(self._pair(x0))
        self.evaluations = 0

    def _pair(self, x: np.ndarray) -> np.ndarray:
        xb = np.concatenate([x, x]) if self.cfg is not None else x  # (2K, L, C)
        return np.ascontiguousarray(xb.astype(_NUMPY_OF[self.xdt]))

    def _denoise(self, t: float) -> None:
        self.T.update_inplace(np.full(self.T.shape()[0], t, dtype=_NUMPY_OF[self.tdt]))
        canary = self.shape.runs < CANARY_RUNS
        if canary:
            self.V.update_inplace(np.full(self.V.shape(), np.nan, dtype=_NUMPY_OF[self.vdt]))
        self.shape.session.run_bound(self.den_binding)
        self.shape.runs += 1
        self.evaluations += 1
        if canary and np.isnan(self.V.numpy()).any():
            graph = "on" if self.shape.session.captured else "off"
            raise BackendError(
                f"{self.owner.path.name}: the denoiser run left its velocity buffer unwritten "
                f"(run {self.shape.runs}, CUDA graph {graph})"
            )

    def euler(self, t: list[float], callback) -> np.ndarray:
        for i in range(len(t) - 1):
            self._denoise(t[i])
            self.DT.update_inplace(np.array([t[i + 1] - t[i]], dtype=np.float32))
            self.step.run_bound(self.step_bindings[i % 2])
            if callback is not None:
                callback(i, t[i + 1], None)
        return _host(self.S[(len(t) - 1) % 2])

    def velocity(self, x: np.ndarray, t: float) -> np.ndarray:
        """The guided velocity at (x, t): x uploaded, CFG combined on the device."""
        self.X.update_inplace(self._pair(x))
        self._denoise(t)
        self.S[0].update_inplace(np.ascontiguousarray(x, dtype=np.float32))
        self.DT.update_inplace(np.zeros(1, np.float32))
        self.step.run_bound(self.step_bindings[0])
        return _host(self.G)


_NUMPY_OF = {"float32": np.float32, "float16": np.float16}


def _host(value) -> np.ndarray:
    """A host copy that owns its memory: a CPU OrtValue's ``numpy()`` is a view of the bound
    buffer, which the next step overwrites (a multistep solver keeps old velocities)."""
    return np.array(value.numpy(), copy=True)


def _declared(inputs: tuple[TensorInfo, ...], name: str) -> str | None:
    for t in inputs:
        if t.name == name:
            return t.dtype if t.dtype in _NUMPY_OF else None
    raise BackendError(f"the denoiser has no input {name!r}")


__all__ = ["CANARY_RUNS", "STEP_GRAPHS", "DeviceSampler"]
