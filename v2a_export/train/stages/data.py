"""Stage ``data``: render the training set's soundtracks once, as log-mels.

Writes under ``OUT/data/``:

- ``clips.json``: one :class:`~v2a_export.train.data.ClipRecord` per clip;
- ``mels.npy``: float16 (N, 2, n_mels, M), the log-mel of each clip's two soundtracks
  (own ambience, ``alt_ambience``);
- ``audio.npy``: int16 (P, 2, W), the waveforms of the first ``audio_pool`` clips (vocoder);
- ``mel_stats.json``: per-bin mean and std of the log-mels (the VAE's ``data_mean/std``).

Resumable in chunks of clips (``progress.json`` says how many are done).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from v2a_runtime.media.files import atomic_output

from v2a_export.models.configs import ModelConfig
from v2a_export.models.mel import LogMel

from ..data import ClipRecord, clip_record, soundtracks, training_seeds
from ..recipe import DataRecipe

CHUNK = 64  # clips rendered between progress saves


def data_dir(out: Path) -> Path:
    return Path(out) / "data"


def run_data(out: Path, recipe: DataRecipe, config: ModelConfig,
             on_step: Callable[[str, int, int, dict], None] | None = None) -> None:
    root = data_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    seeds = training_seeds(recipe.clips, recipe.first_seed)
    seq = config.rates.lengths(recipe.duration)
    samples, frames = seq.samples, seq.mel_frames  # soundtracks are zero-padded to 2·L·hop
    pool = min(recipe.audio_pool, recipe.clips)
    mels = _open(root / "mels.npy", np.float16, (recipe.clips, 2, config.mel.n_mels, frames))
    audio = _open(root / "audio.npy", np.int16, (pool, 2, samples))
    progress = root / "progress.json"
    done = json.loads(progress.read_text())["clips"] if progress.exists() else 0
    records = _read_records(root) if done else []
    records = records[:done]
    mel = LogMel(config.mel)
    for a in range(done, recipe.clips, CHUNK):
        for i in range(a, min(a + CHUNK, recipe.clips)):
            rec, _ = clip_record(seeds[i], recipe.duration)
            wave = soundtracks(rec, recipe.duration)  # (2, W0)
            wave = np.pad(wave, ((0, 0), (0, samples - wave.shape[1])))  # (2, W)
            with torch.no_grad():
                mels[i] = mel(torch.from_numpy(wave)).numpy().astype(np.float16)
            if i < pool:
                audio[i] = np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16)
            records.append(rec)
        mels.flush()
        audio.flush()
        _write_records(root, records)
        progress.write_text(json.dumps({"clips": len(records)}))
        if on_step is not None:
            on_step("data", len(records) - 1, recipe.clips, {})
    _write_stats(root, mels)


def _open(path: Path, dtype, shape) -> np.memmap:
    mode = "r+" if path.exists() else "w+"
    return np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=shape)


def _write_records(root: Path, records: list[ClipRecord]) -> None:
    with atomic_output(root / "clips.json") as tmp:
        tmp.write_text(json.dumps([r.to_dict() for r in records]))


def _read_records(root: Path) -> list[ClipRecord]:
    return [ClipRecord.from_dict(d) for d in json.loads((root / "clips.json").read_text())]


def _write_stats(root: Path, mels: np.ndarray) -> None:
    """Per-bin mean/std over every frame of every soundtrack (float64 accumulation)."""
    n_mels = mels.shape[2]
    s1, s2, count = np.zeros(n_mels), np.zeros(n_mels), 0
    for i in range(0, mels.shape[0], 256):
        x = mels[i: i + 256].astype(np.float64)  # (n, 2, n_mels, M)
        s1 += x.sum(axis=(0, 1, 3))
        s2 += np.square(x).sum(axis=(0, 1, 3))
        count += x.shape[0] * x.shape[1] * x.shape[3]
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean**2, 1e-8))
    (root / "mel_stats.json").write_text(json.dumps({"mean": mean.tolist(), "std": std.tolist()}))


def load_data(out: Path) -> tuple[list[ClipRecord], np.ndarray, np.ndarray, dict]:
    """(records, mels (N, 2, n_mels, M) float16 memmap, audio (P, 2, W) int16 memmap, stats)."""
    root = data_dir(out)
    stats = json.loads((root / "mel_stats.json").read_text())
    mels = np.load(root / "mels.npy", mmap_mode="r")
    audio = np.load(root / "audio.npy", mmap_mode="r")
    return _read_records(root), mels, audio, stats
