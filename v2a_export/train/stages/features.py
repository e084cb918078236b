"""Stage ``features``: what the flow trains on, computed once with the frozen encoders and VAE.

Writes under ``OUT/features/`` (float16 features, float32 latents):

- ``clip.npy`` (N, Lc, Dc) and ``sync.npy`` (N, Ls, Ds): encoder outputs on frames rendered at
  the decoder's instants and perturbed like a decode;
- ``latents.npy`` (N, 2, L, C): VAE posterior means of both soundtracks, channels last;
- ``latent_stats.json``: per-channel mean and std of the posterior means (the flow's
  ``latent_mean`` / ``latent_std``, spec/mmaudio.md §1.8).

Resumable in chunks of clips.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from v2a_runtime import world
from v2a_runtime.media import sync_segments

from v2a_export.models.clip import CLIP
from v2a_export.models.configs import ModelConfig
from v2a_export.models.synchformer import Synchformer
from v2a_export.models.vae import VAE

from ..data import augment_frames, render_streams
from .data import load_data

CHUNK = 64
_FEATURE_STREAM = 3


def features_dir(out: Path) -> Path:
    return Path(out) / "features"


def lengths(config: ModelConfig, duration: float):
    return config.rates.lengths(duration)


@torch.no_grad()
def encode_video(clip: CLIP, sync: Synchformer, frames_clip: np.ndarray,
                 frames_sync: np.ndarray, sync_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """clip (Lc, Dc) and sync (Ls, Ds) features, as the runtime computes them."""
    cf = clip.encode_frames_u8(torch.from_numpy(np.ascontiguousarray(frames_clip)))
    seg = np.ascontiguousarray(sync_segments(frames_sync[:sync_frames]))  # (S, 16, H, W, 3)
    sf = sync.encode_segments_u8(torch.from_numpy(seg))  # (S, 8, Ds)
    return cf.numpy(), sf.flatten(0, 1).numpy()


def run_features(out: Path, config: ModelConfig, seed: int, duration: float,
                 clip: CLIP, sync: Synchformer, vae: VAE,
                 on_step: Callable[[str, int, int, dict], None] | None = None) -> None:
    records, mels, _, _ = load_data(out)
    root = features_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    seq = lengths(config, duration)
    n = len(records)
    f = config.flow
    cl = _open(root / "clip.npy", np.float16, (n, seq.clip_frames, f.clip_dim))
    sy = _open(root / "sync.npy", np.float16, (n, seq.sync_tokens, f.sync_dim))
    la = _open(root / "latents.npy", np.float32, (n, 2, seq.latent, f.latent_dim))
    progress = root / "progress.json"
    done = json.loads(progress.read_text())["clips"] if progress.exists() else 0
    for a in range(done, n, CHUNK):
        for i in range(a, min(a + CHUNK, n)):
            rng = np.random.default_rng([seed, _FEATURE_STREAM, i])
            st = render_streams(world.make_scene(records[i].seed, duration), config)
            c, s = encode_video(clip, sync, augment_frames(st.clip, rng),
                                augment_frames(st.sync, rng), seq.sync_frames)
            cl[i], sy[i] = c.astype(np.float16), s.astype(np.float16)
            with torch.no_grad():
                mel = torch.from_numpy(np.asarray(mels[i], dtype=np.float32))  # (2, n_mels, M)
                la[i] = vae.encode(mel).mean.transpose(1, 2).numpy()  # (2, L, C)
        for arr in (cl, sy, la):
            arr.flush()
        stop = min(a + CHUNK, n)
        progress.write_text(json.dumps({"clips": stop}))
        if on_step is not None:
            on_step("features", stop - 1, n, {})
    lat = np.load(root / "latents.npy", mmap_mode="r")
    flat = np.asarray(lat, dtype=np.float64).reshape(-1, f.latent_dim)  # (N·2·L, C)
    stats = {"mean": flat.mean(0).tolist(), "std": flat.std(0).tolist()}
    (root / "latent_stats.json").write_text(json.dumps(stats))


def _open(path: Path, dtype, shape) -> np.memmap:
    mode = "r+" if path.exists() else "w+"
    return np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=shape)


def load_features(out: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    root = features_dir(out)
    load = lambda name: np.load(root / name, mmap_mode="r")  # noqa: E731
    stats = json.loads((root / "latent_stats.json").read_text())
    return load("clip.npy"), load("sync.npy"), load("latents.npy"), stats
