"""Which sync token each latent frame reads: MMAudio's resize ("nearest") and the "frames"
alignment the default model is trained with. Torch-free."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from test_golden import golden_frames
from v2a_runtime.backends.recording import RecordingSession
from v2a_runtime.config import Manifest
from v2a_runtime.pipeline import Pipeline
from v2a_runtime.sequence import Rates, frame_sync_index, sync_index

TINY = Rates(16000, 256, 25.0, 25.0, "frames")
DATA = Path(__file__).parent / "data"


def token_frames(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame-position span [lo, lo + 2) each read token stands for: frames 8s+2j, 8s+2j+1."""
    s, j = idx // 8, idx % 8
    return 8 * s + 2 * j - 0.5, 8 * s + 7.5


@pytest.mark.parametrize("duration", [0.64, 2.56, 4.16, 8.0, 10.0])
def test_every_latent_frame_reads_a_token_that_shows_its_instant(duration):
    n = TINY.lengths(duration)
    idx = TINY.sync_index(n.sync_tokens, n.latent)
    f = (np.arange(n.latent) + 0.5) / TINY.latent_rate * 25.0  # frame position of each centre
    lo, centre = token_frames(idx)
    inside = (f >= lo) & (f < lo + 2)
    last = 8 * (n.sync_segments - 1) + 15.5  # frames beyond the last segment read its last token
    assert np.all(inside | (f >= last)), f[~inside & (f < last)]
    # from the segment where the instant is nearest the centre: at most half a stride away,
    # except where only one segment holds the instant (the window's first and last 4 frames)
    inner = (f >= 7.5) & (f < last - 8)
    assert np.all(np.abs(f - centre)[inner] <= 4.0 + 1e-9)
    assert idx.dtype == np.int64 and idx.min() >= 0 and idx.max() < n.sync_tokens


def test_known_values_and_the_resize_differ():
    idx = frame_sync_index(192, 250, 31.25, 25.0)
    # latent frame 100 (3.216 s, frame 80.4) lies in segments 9 and 10; it is nearer the centre
    # of segment 9 (frames 72..87): token 8·9 + floor((80.4 + 0.5 - 72) / 2) = 76
    assert idx[100] == 76
    assert idx[:6].tolist() == [0, 0, 1, 1, 2, 2]
    nearest = sync_index(192, 250)
    assert nearest[100] == 77 and not np.array_equal(idx, nearest)
    # MMAudio's resize reads tokens up to 0.3 s away from the latent frame; this one within
    # one frame (the last latent frame, past the last video frame, 1.1 frames)
    f = (np.arange(250) + 0.5) / 31.25 * 25.0
    real = lambda i: (8 * (i // 8) + 2 * (i % 8) + 0.5)  # noqa: E731 - a token's centre frame
    assert np.abs(real(nearest) - f).max() / 25 > 0.28
    assert np.abs(real(idx) - f)[:-1].max() <= 1.0 + 1e-9
    assert np.abs(real(idx) - f)[-1] <= 1.1 + 1e-9


def test_rates_refuse_an_unknown_alignment():
    with pytest.raises(ValueError, match="sync_alignment 'linear' is not one of nearest, frames"):
        Rates(16000, 256, sync_alignment="linear")


def test_the_pipeline_feeds_the_manifest_alignment():
    """The conditioner receives the index of the bundle's own alignment."""
    text = (DATA / "test_bundle" / "manifest.json").read_text()
    manifest = Manifest.from_dict(json.loads(text))
    assert manifest.video.sync_alignment == "nearest"
    for alignment in ("nearest", "frames"):
        m = dataclasses.replace(manifest, video=dataclasses.replace(manifest.video,
                                                                    sync_alignment=alignment))
        pipe = Pipeline.load(DATA / "test_bundle", threads=1)
        rec = RecordingSession(pipe.sessions["conditioner"])
        pipe = dataclasses.replace(pipe.with_sessions(conditioner=rec),
                                   bundle=dataclasses.replace(pipe.bundle, manifest=m))
        pipe.generate(golden_frames(), prompt="rain", seed=1, steps=2, watermark=False)
        n = m.rates.lengths(1.0)
        got = rec.feeds[0]["sync_index"]
        np.testing.assert_array_equal(got, m.rates.sync_index(n.sync_tokens, n.latent))
        if alignment == "nearest":
            want = sync_index(n.sync_tokens, n.latent)
        else:
            want = frame_sync_index(n.sync_tokens, n.latent, 31.25, 25.0)
        np.testing.assert_array_equal(got, want)
