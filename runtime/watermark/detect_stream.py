"""Detection of a :class:`~v2a_runtime.signals.Signal` in bounded memory (``v2a watermark
verify`` on files of any length).

The same verdict as ``detect`` on the whole array: the mono mix of the channels resampled
to 16 kHz block by block (``MonoMix``, ``Resampled``: equal to the whole-array mix and
resample), the offset stage block by block (``watermark.scan``: z, phase and offset as
``best_alignment``'s up to float rounding, the payload vote and the per-second z over the whole
file), the speed/tempo stage on at most ``search.SEARCH_LIMIT_S`` of audio (the whole signal up
to that length, as ``detect``; its loudest excerpt beyond), and the key-randomisation null from
the offset stage's folded features. Memory is bounded by the blocks; the offset stage's cell
energies wait in a temporary file in ``directory``.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace

import numpy as np

from ..signals import MonoMix, Resampled, Signal, blocks
from .analysis import Alignment
from .detect import ALPHA, Detection, InputInfo, check_search, decide, too_short
from .keys import WatermarkKey
from .layout import DEFAULT_CONFIG, WatermarkConfig, make_layout
from .null import empirical_p_value, null_scores_folded, null_secrets
from .scan import BLOCK_FRAMES, scan
from .search import Found, search_signal


def detect_signal(signal: Signal, key: WatermarkKey, *, search: str = "auto",
                  alpha: float = ALPHA, null_keys: int = 0,
                  config: WatermarkConfig = DEFAULT_CONFIG, block_frames: int = BLOCK_FRAMES,
                  directory: str | os.PathLike | None = None) -> Detection:
    """``detect`` of ``signal`` (any rate ≥ 8 kHz, any number of channels), block by block
    (``block_frames`` analysis frames of 32 ms at a time); ``directory``: where the temporary
    file goes (default: the system's temporary directory)."""
    check_search(search)
    if signal.rate < 8000:
        raise ValueError(f"sample_rate must be at least 8000 Hz, got {signal.rate}")
    mono = MonoMix(signal)
    for block in blocks(mono):
        if not np.all(np.isfinite(block)):
            raise ValueError("audio contains NaN or infinite samples")
    x16 = Resampled(mono, config.sample_rate)
    layout = make_layout(key.secret, config)
    stage = scan(x16, layout, config, block_frames=block_frames, directory=directory)
    if stage.best is None:
        raise too_short(x16.length, config)
    n_seconds = math.ceil(signal.length / signal.rate - 1e-6)
    inp = InputInfo(layout, key, signal.rate, config, n_seconds)

    def run_search() -> tuple[Alignment, Found, int] | None:
        hit = search_signal(x16, layout, config)
        if hit is None:
            return None
        found, start = hit
        return Alignment.of(found.analysis, layout, config), found, start

    d, _ = decide(stage.best, run_search, search, alpha, inp)
    if null_keys <= 0:
        return d
    null = null_scores_folded(stage.folded, null_secrets(null_keys, key.key_id), config)
    return replace(d, p_value_empirical=empirical_p_value(stage.best.z, null))
