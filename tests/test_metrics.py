"""Evaluation metrics on the world's own audio: near-perfect on ground truth, silent on
silence and ambience alone, the shift measured in ms, ambience bands, the material classifier
refit, and known answers for matching, clusters, band levels and pooling."""

from __future__ import annotations

import json

import numpy as np
import pytest
from v2a_runtime import world
from v2a_runtime.world import metrics

SR = world.SAMPLE_RATE
EVAL_SEEDS = world.held_out_seeds(30)


@pytest.fixture(scope="module")
def clips():
    out = []
    for seed in EVAL_SEEDS:
        scene = world.make_scene(seed)
        out.append((scene.ground_truth(), world.render_audio(scene)))
    return out


def _shift(audio: np.ndarray, seconds: float) -> np.ndarray:
    n = int(round(abs(seconds) * SR))
    if seconds >= 0:
        return np.concatenate([np.zeros(n, audio.dtype), audio[: len(audio) - n]])
    return np.concatenate([audio[n:], np.zeros(n, audio.dtype)])


def test_ground_truth_audio_scores_near_perfect(clips):
    summary = metrics.summarize([metrics.evaluate_clip(a, gt) for gt, a in clips])
    assert summary.n_onsets > 90
    assert summary.hit_rate >= 0.98
    assert summary.median_abs_offset_ms <= 2.0
    assert summary.p95_abs_offset_ms <= 10.0
    assert summary.false_per_second <= 0.05
    assert summary.material_total > 70
    assert summary.material_accuracy >= 0.95


@pytest.mark.parametrize("shift_ms", [30.0, -20.0])
def test_shifted_audio_is_measured_in_ms(clips, shift_ms):
    results = [metrics.evaluate_clip(_shift(a, shift_ms / 1000), gt) for gt, a in clips[:12]]
    summary = metrics.summarize(results)
    assert summary.median_offset_ms == pytest.approx(shift_ms, abs=2.0)
    assert summary.hit_rate >= 0.9  # still inside the ±40 ms window
    late = metrics.summarize([metrics.evaluate_clip(_shift(a, 0.06), gt) for gt, a in clips[:6]])
    assert late.hit_rate < 0.2 and late.false_per_second > 0.3  # 60 ms: outside the window


def test_silence_and_ambience_alone_have_no_onsets():
    silence = np.zeros(8 * SR, np.float32)
    assert metrics.detect_onsets(silence).size == 0
    gt = world.make_scene(world.HELD_OUT_SEED_BASE).ground_truth()
    m = metrics.evaluate_clip(silence, gt)
    assert (m.n_hits, m.n_detected, m.material_total) == (0, 0, 0) and m.hit_rate == 0.0
    assert np.isnan(m.median_abs_offset_ms) and np.isnan(m.material_accuracy)
    for ambience in world.AMBIENCE_NAMES:
        for seed in (11, 12):
            amb = world.render_stems(world.make_scene(seed, ambience=ambience)).ambience
            assert metrics.detect_onsets(amb).size == 0, (ambience, seed)


def test_onsets_of_clicks_in_noise_are_sample_accurate():
    rng = np.random.default_rng(0)
    x = 0.003 * rng.standard_normal(4 * SR)
    true = np.array([0.3137, 0.9, 1.5002, 2.75, 3.1])
    for t in true:
        i = int(round(t * SR))
        x[i: i + 400] += 0.3 * np.exp(-np.arange(400) / 60.0) * np.sin(0.9 * np.arange(400))
    found = metrics.detect_onsets(x)
    assert found.shape == true.shape
    np.testing.assert_allclose(found, np.round(true * SR) / SR, atol=0.5e-3)


def test_ambience_bands_separate_ambiences():
    levels = {a: [metrics.ambience_levels_db(world.render_audio(world.make_scene(s, ambience=a)))
                  for s in (21, 22)] for a in world.AMBIENCE_NAMES}
    for a in world.NAMED_AMBIENCES:
        own = min(lv[a] for lv in levels[a])
        others = max(lv[a] for b in world.AMBIENCE_NAMES if b != a for lv in levels[b])
        assert own - others >= 20.0, (a, own, others)
        assert own == pytest.approx(world.AMBIENCES[a].level_db, abs=6.0)


def test_band_level_of_a_sine_is_its_mean_square():
    t = np.arange(4 * SR) / SR
    for amp, f in ((0.1, 4500.0), (0.01, 150.0)):
        x = amp * np.sin(2 * np.pi * f * t)
        expected = 20 * np.log10(amp / np.sqrt(2))
        assert metrics.band_level_db(x, (f - 300, f + 300)) == pytest.approx(expected, abs=0.1)
        assert metrics.band_level_db(x, (f + 1000, f + 2000)) < expected - 40


def test_matching_is_one_to_one_and_closest_first():
    det = np.array([0.100, 0.130, 0.500, 0.905])
    ref = np.array([0.110, 0.120, 0.900, 2.000])
    pairs = metrics.match_onsets(det, ref, tolerance=0.040)
    assert pairs == [(0, 0), (1, 1), (3, 2)]
    assert metrics.match_onsets(det, ref, tolerance=0.004) == []
    assert metrics.match_onsets(np.zeros(0), ref) == []
    assert metrics.clusters(np.array([0.1, 0.1, 0.14, 0.3, 0.349, 0.5])) == [[0, 1, 2], [3, 4],
                                                                             [5]]


def test_clusters_count_once_and_offsets_are_signed():
    gt = {"duration": 2.0, "events": [{"time": 0.5, "material": "metal"},
                                      {"time": 0.5, "material": "wood"},
                                      {"time": 1.5, "material": "glass"}]}
    x = np.zeros(2 * SR)
    for t in (0.512, 1.493):
        i = int(t * SR)
        x[i: i + 800] += 0.3 * np.exp(-np.arange(800) / 100.0) * np.sin(0.7 * np.arange(800))
    m = metrics.evaluate_clip(x, gt)
    assert (m.n_events, m.n_onsets, m.n_hits, m.n_false) == (3, 2, 2, 0)
    np.testing.assert_allclose(m.offsets_ms, [12.0, -7.0], atol=0.3)
    d = json.loads(json.dumps(m.to_dict()))
    assert d["hit_rate"] == 1.0 and d["false_per_second"] == 0.0


def test_summary_pools_over_clips():
    a = metrics.ClipMetrics(8.0, 3, 2, 2, (1.0, -3.0), 3, 1, 1, 2, {})
    b = metrics.ClipMetrics(2.0, 1, 1, 0, (), 1, 1, 0, 0, {})
    s = metrics.summarize([a, b])
    assert (s.n_clips, s.n_onsets, s.material_total) == (2, 3, 2)
    assert s.hit_rate == pytest.approx(2 / 3)
    assert s.median_abs_offset_ms == pytest.approx(2.0)
    assert s.median_offset_ms == pytest.approx(-1.0)
    assert s.false_per_second == pytest.approx(0.2)
    assert s.material_accuracy == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least one"):
        metrics.summarize([])


def test_classifier_constants_are_the_calibration_fit():
    feats, labels = metrics.calibration_set(metrics.CALIBRATION_SEEDS)
    refit = metrics.MaterialClassifier.fit(feats, labels)
    fixed = metrics.DEFAULT_CLASSIFIER
    assert refit.materials == fixed.materials
    np.testing.assert_allclose(refit.centres, fixed.centres, atol=2e-6)
    np.testing.assert_allclose(refit.scale, fixed.scale, atol=2e-6)
    accuracy = np.mean(np.array(fixed.predict(feats)) == np.array(labels))
    assert accuracy >= 0.95


def _mel_round_trip(x: np.ndarray, iters: int = 12) -> np.ndarray:
    """80-band mel magnitude (1024/256, as the tiny model's VAE sees it) -> pseudo-inverse ->
    Griffin-Lim: roughly the best a mel vocoder can give back."""
    n_fft, hop = 1024, 256
    win = np.hanning(n_fft + 1)[:-1]  # periodic Hann: its squares at hop 256 sum to 1.5
    freqs = np.fft.rfftfreq(n_fft, 1 / SR)
    mel = 2595 * np.log10(1 + np.array([0.0, 8000.0]) / 700)
    pts = 700 * (10 ** (np.linspace(mel[0], mel[1], 82) / 2595) - 1)
    fb = np.stack([np.clip(np.minimum((freqs - a) / (b - a), (c - freqs) / (c - b)), 0, None)
                   for a, b, c in zip(pts[:-2], pts[1:-1], pts[2:], strict=True)])  # (80, F)
    pad = np.pad(x.astype(np.float64), n_fft)
    n_frames = 1 + (len(pad) - n_fft) // hop

    def stft(y):  # (F, T)
        return np.fft.rfft(np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop]
                           [:n_frames] * win, axis=1).T

    def istft(z):  # overlap-add, window-square normalised
        frames = np.fft.irfft(z.T, n_fft, axis=1) * win  # (T, n_fft)
        out = np.zeros(len(pad))
        for k in range(n_fft // hop):  # frames k, k + 4, ... do not overlap each other
            seg = frames[k::4].reshape(-1)
            out[k * hop: k * hop + len(seg)] += seg[: len(pad) - k * hop]
        return out / 1.5

    mag = np.maximum(np.linalg.pinv(fb) @ (fb @ np.abs(stft(pad))), 0.0)
    phase = np.exp(2j * np.pi * np.random.default_rng(0).random(mag.shape))
    for _ in range(iters):
        z = stft(istft(mag * phase))
        phase = z / np.maximum(np.abs(z), 1e-12)
    return istft(mag * phase)[n_fft: n_fft + len(x)].astype(np.float32)


def test_metrics_survive_a_noise_floor_and_a_mel_round_trip(clips):
    rng = np.random.default_rng(0)
    noisy = [metrics.evaluate_clip(a + 10 ** (-50 / 20) * rng.standard_normal(len(a)), gt)
             for gt, a in clips[:12]]
    s = metrics.summarize(noisy)
    assert s.hit_rate >= 0.95 and s.false_per_second <= 0.05 and s.material_accuracy >= 0.9
    s = metrics.summarize([metrics.evaluate_clip(_mel_round_trip(a), gt) for gt, a in clips[:6]])
    assert s.hit_rate >= 0.95 and s.false_per_second <= 0.05
    assert s.median_abs_offset_ms <= 5.0 and s.material_accuracy >= 0.85
