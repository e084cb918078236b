"""Precision-aware parity gates: low-precision graphs against the fp32 PyTorch reference.

Per component, at every case of the :class:`ParityPlan` (two or more durations per dynamic
axis), two measurements are gated, both against the fp32 PyTorch network:

- the **graph itself** under onnxruntime CPU (it must load, run and stay finite; fp16 only:
  onnxruntime has no bfloat16 CPU kernels);
- its **emulation twin** (:func:`precision_graph.emulate`): fp32 compute with every
  low-precision tensor rounded as a GPU stores it. onnxruntime's CPU provider computes runs of
  fp16 nodes in fp32 without rounding between them, so the graph alone would flatter fp16
  (NVIDIA/TensorRT#4355, spec/deployment.md §3.7); the twin is the honest CPU measurement.

Gate per output: finite, cosine ≥ 0.999, relative L2 ≤ 0.05 (fp16 and bf16 alike; measured
tiny numbers are ~100× inside). End to end: the runtime pipeline on the twin graphs against the
PyTorch fp32 reference pipeline on the same frames, prompt and x0; waveform relative L2 is
reported, the log-mel spectrogram error of the final audio (mean |Δ| in dB over time-frequency
bins above −80 dB of the reference peak) is gated at ≤ :data:`MEL_DB_GATE`.

int8 graphs run for real on a CPU (no twin needed) and are gated against the fp32 graph they
were made from, on **held-out real inputs** (:func:`int8_checks`): random tensors would say
nothing about activations quantized from their own range. Per output: finite, cosine ≥
:data:`INT8_MIN_COSINE`, relative L2 ≤ :data:`INT8_REL_L2`; the encoders' features also per
feature vector (one frame, one sync token, one text token): cosine ≥
:data:`INT8_FEATURE_COSINE`. End to end the same log-mel gate, int8 bundle vs fp32 bundle.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from v2a_runtime.backends import BackendError
from v2a_runtime.backends.ort import first_line, graph_io
from v2a_runtime.config import TensorInfo

from v2a_export.export.parity import Metrics
from v2a_export.export.precision.convert import cpu_session
from v2a_export.export.precision.graph import emulate

MIN_COSINE = 0.999
LOW_REL_L2 = 0.05
MEL_DB_GATE = 1.0  # mean |Δ log-mel| of the final audio, dB
MEL_FLOOR_DB = 80.0  # bins more than this below the reference's peak are ignored


@dataclass(frozen=True)
class PrecisionThreshold:
    """A gate for a low-precision graph (same ``failures`` interface as parity.Threshold)."""

    precision: str
    rel_l2: float = LOW_REL_L2
    min_cosine: float = MIN_COSINE
    max_abs_scale: float | None = None  # not gated: fp16 spacing makes max |Δ| scale-bound
    mel_db: float | None = None  # end to end only

    def failures(self, m: Metrics, mel: MelError | None = None) -> tuple[str, ...]:
        out = []
        if not m.ref_finite:
            out.append("the PyTorch reference has NaN/Inf")
        if not m.finite:
            out.append(f"NaN/Inf in the {self.precision} output")
        if out:
            return tuple(out)
        if self.min_cosine is not None and not m.cosine >= self.min_cosine:
            out.append(f"cosine {m.cosine:.6f} < {self.min_cosine}")
        if not m.rel_l2 <= self.rel_l2:
            out.append(f"rel_l2 {m.rel_l2:.2e} > {self.rel_l2:.0e}")
        if mel is not None and self.mel_db is not None and not mel.mean_db <= self.mel_db:
            out.append(f"log-mel error {mel.mean_db:.2f} dB > {self.mel_db:g} dB")
        return tuple(out)


def threshold_for(precision: str) -> PrecisionThreshold:
    return PrecisionThreshold(precision=precision)


def end_to_end_threshold(precision: str) -> PrecisionThreshold:
    """Waveform error after a full sampling run compounds per-step rounding through the ODE
    and the decoders; it is reported (rel_l2 ≤ 1 only catches garbage), the mel error gated."""
    return PrecisionThreshold(precision=precision, rel_l2=1.0, min_cosine=None,
                              mel_db=MEL_DB_GATE)  # fmt: skip


# --- sessions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwinSession:
    """A Session running the emulation twin of a low-precision graph (fp32 I/O)."""

    session: object  # onnxruntime.InferenceSession
    path: Path
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None) -> TwinSession:
        path = Path(path)
        try:
            model = onnx.load(str(path))
            session = cpu_session(emulate(model), threads)
        except Exception as e:  # onnx/onnxruntime raise many types
            raise BackendError(
                f"cannot build the emulation twin of {path}: {first_line(e)}"
            ) from e
        # the twin computes in float32 whatever the graph's declared I/O type
        ins, outs = (tuple(replace(t, dtype=_F32.get(t.dtype, t.dtype)) for t in infos)
                     for infos in graph_io(session))  # fmt: skip
        return cls(session, path, ins, outs)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            values = self.session.run(None, feeds)
        except Exception as e:
            raise BackendError(f"{self.path.name} (emulated): run failed: {first_line(e)}") from e
        return {t.name: v for t, v in zip(self.outputs, values, strict=True)}


_F32 = {"float16": "float32", "bfloat16": "float32"}


# --- the log-mel error of the final audio ----------------------------------------------------


@dataclass(frozen=True)
class MelError:
    """|Δ| between log-mel spectrograms (dB) over bins within 80 dB of the reference peak."""

    mean_db: float
    p99_db: float
    max_db: float
    bins: int


def mel_error_db(got: np.ndarray, want: np.ndarray, sample_rate: int) -> MelError:
    """Log-mel error of waveform ``got`` against ``want`` (both (W,) float)."""
    from scipy.signal import stft

    from v2a_export.models.mel import mel_filterbank

    n_fft = 1024 if sample_rate <= 24000 else 2048
    n_mels = 80 if sample_rate <= 24000 else 128
    fb = mel_filterbank(sample_rate, n_fft, n_mels, 0.0, sample_rate / 2)  # (n_mels, F)

    def log_mel(x: np.ndarray) -> np.ndarray:
        _, _, z = stft(np.asarray(x, np.float64), nperseg=n_fft, noverlap=n_fft - n_fft // 4,
                       boundary=None, padded=False)  # fmt: skip
        return fb @ (np.abs(z) ** 2)  # (n_mels, frames) power

    pg, pw = log_mel(got), log_mel(want)
    peak = float(pw.max(initial=0.0))
    if peak <= 0:
        return MelError(0.0, 0.0, 0.0, 0)
    floor = peak * 10.0 ** (-MEL_FLOOR_DB / 10.0)
    keep = pw >= floor
    dg = 10.0 * np.log10(np.maximum(pg, floor))
    dw = 10.0 * np.log10(np.maximum(pw, floor))
    diff = np.abs(dg - dw)[keep]
    if diff.size == 0:
        return MelError(0.0, 0.0, 0.0, 0)
    return MelError(float(diff.mean()), float(np.percentile(diff, 99)), float(diff.max()),
                    int(diff.size))  # fmt: skip


def is_low(precision: str) -> bool:
    return precision in ("fp16", "bf16")


# --- int8: held-out real inputs against the fp32 graph ---------------------------------------

INT8_MIN_COSINE = 0.995  # every output, whole tensor
INT8_REL_L2 = 0.1  # every output: twice the default budget the pass spends on calibration inputs
INT8_FEATURE_COSINE = 0.99  # the encoders' features, per frame / segment token / text token
FEATURE_OUTPUTS = ("clip_features", "sync_features", "text_features")


@dataclass(frozen=True)
class Int8Check:
    """One output of an int8 graph against its fp32 graph, worst over the held-out feeds."""

    name: str
    rel_l2: float
    cosine: float
    max_abs: float
    row_cosine: float | None  # features only: the smallest cosine of one feature vector
    row_cosine_mean: float | None
    finite: bool

    def failures(self) -> tuple[str, ...]:
        if not self.finite:
            return (f"{self.name}: NaN/Inf in the int8 output",)
        out = []
        if not self.cosine >= INT8_MIN_COSINE:
            out.append(f"{self.name}: cosine {self.cosine:.5f} < {INT8_MIN_COSINE}")
        if not self.rel_l2 <= INT8_REL_L2:
            out.append(f"{self.name}: rel_l2 {self.rel_l2:.2e} > {INT8_REL_L2:g}")
        if self.row_cosine is not None and not self.row_cosine >= INT8_FEATURE_COSINE:
            out.append(f"{self.name}: feature cosine {self.row_cosine:.5f} < "
                       f"{INT8_FEATURE_COSINE}")  # fmt: skip
        return tuple(out)


def int8_checks(ref, session, feeds) -> tuple[Int8Check, ...]:
    """Every output of ``session`` (the int8 graph) against ``ref`` (its fp32 graph), both
    onnxruntime sessions, worst over ``feeds`` (held-out real inputs)."""
    names = [o.name for o in ref.get_outputs()]
    worst: dict[str, Int8Check] = {}
    for feed in feeds:
        want = ref.run(names, dict(feed))
        got = session.run(names, dict(feed))
        for name, g, w in zip(names, got, want, strict=True):
            c = _int8_check(name, g, w)
            old = worst.get(name)
            if old is None or _int8_worse(c, old):
                worst[name] = c
    return tuple(worst[n] for n in names)


def _int8_check(name: str, got: np.ndarray, want: np.ndarray) -> Int8Check:
    m = Metrics.of(got, want)
    rows = rows_mean = None
    if name in FEATURE_OUTPUTS and m.finite:
        g = np.asarray(got, np.float64).reshape(-1, got.shape[-1])  # (rows, D)
        w = np.asarray(want, np.float64).reshape(-1, want.shape[-1])
        norms = np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1)
        cos = np.where(norms > 0, (g * w).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
        rows, rows_mean = float(cos.min()), float(cos.mean())
    return Int8Check(name, m.rel_l2, m.cosine, m.max_abs, rows, rows_mean, m.finite)


def _int8_worse(a: Int8Check, b: Int8Check) -> bool:
    if a.finite != b.finite:
        return not a.finite
    return a.rel_l2 > b.rel_l2 or (a.row_cosine or 1.0) < (b.row_cosine or 1.0)


__all__ = [
    "FEATURE_OUTPUTS",
    "INT8_FEATURE_COSINE",
    "INT8_MIN_COSINE",
    "INT8_REL_L2",
    "Int8Check",
    "int8_checks",
    "LOW_REL_L2",
    "MEL_DB_GATE",
    "MIN_COSINE",
    "MelError",
    "PrecisionThreshold",
    "TwinSession",
    "end_to_end_threshold",
    "is_low",
    "mel_error_db",
    "threshold_for",
]
