"""The trainer of the default model: every stage on a handful of clips for a few steps.

Checks that each stage's loss goes down, that the weights it writes load strictly into the
official key layouts, that an interrupted run resumed from its checkpoints gives the same
bits as an uninterrupted one, and the mel front-end against a plain numpy computation.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from v2a_runtime.config import NETWORKS  # noqa: E402

from v2a_export.checkpoints import WeightFiles, load_networks  # noqa: E402
from v2a_export.models.configs import TINY  # noqa: E402
from v2a_export.models.mel import LogMel, mel_filterbank  # noqa: E402
from v2a_export.train.recipe import smoke_recipe  # noqa: E402
from v2a_export.train.train import RecipeMismatch, train  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")


class _Log:
    def __init__(self, stop_at: tuple[str, int] | None = None):
        self.logs: dict[str, list[dict]] = {}
        self.stop_at = stop_at

    def __call__(self, stage, step, _total, logs):
        self.logs.setdefault(stage, []).append(dict(logs))
        if self.stop_at == (stage, step):
            raise KeyboardInterrupt  # as if the process were stopped here


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    log = _Log()
    weights = train(out, smoke_recipe(), on_step=log, command="test")
    return out, weights, log.logs


def _mean(rows, key, part):
    vals = [r[key] for r in rows]
    k = max(len(vals) // 3, 1)
    return float(np.mean(vals[:k] if part == "first" else vals[-k:]))


@pytest.mark.parametrize(
    "stage,key", [("vae", "l1"), ("vocoder", "mel_l1"), ("encoders", "text"), ("flow", "loss")]
)
def test_each_stage_lowers_its_loss(run, stage, key):
    _, _, logs = run
    assert len(logs[stage]) == getattr(smoke_recipe(), stage).steps
    assert _mean(logs[stage], key, "last") < _mean(logs[stage], key, "first"), logs[stage]


def test_weights_load_strictly_in_the_official_layout(run):
    out, weights, _ = run
    assert sorted(p.name for p in weights.glob("*.safetensors")) == sorted(
        f"{n}.safetensors" for n in NETWORKS
    )
    nets = load_networks(TINY, WeightFiles(**{n: weights / f"{n}.safetensors" for n in
                                              NETWORKS}))
    info = json.loads((weights / "training.json").read_text())
    assert info["command"] == "test" and set(info["times"]) == {
        "data", "vae", "vocoder", "encoders", "features", "flow"}
    stats = json.loads((out / "features" / "latent_stats.json").read_text())
    torch.testing.assert_close(nets.flow.latent_std.flatten(),
                               torch.tensor(stats["std"]).half().float())
    # the unconditional text is the frozen text tower's encoding of ""
    ids = torch.zeros(1, 77, dtype=torch.int64)
    ids[0, :2] = torch.tensor([49406, 49407])
    torch.testing.assert_close(nets.clip.encode_text(ids)[0], nets.flow.empty_string_feat,
                               atol=2e-3, rtol=0)


def test_interrupted_run_resumes_to_the_same_bits(run, tmp_path):
    _, weights, _ = run
    out = tmp_path / "run"
    for stop in (("vae", 5), ("flow", 6)):
        with pytest.raises(KeyboardInterrupt):
            train(out, smoke_recipe(), resume=True, on_step=_Log(stop), command="test")
    again = train(out, smoke_recipe(), resume=True, command="test")
    for name in NETWORKS:
        a = (weights / f"{name}.safetensors").read_bytes()
        b = (again / f"{name}.safetensors").read_bytes()
        assert a == b, name
    with pytest.raises(RecipeMismatch, match="already holds"):
        train(out, smoke_recipe())
    with pytest.raises(RecipeMismatch, match="different recipe"):
        train(out, smoke_recipe(seed=1), resume=True)


def test_log_mel_equals_a_numpy_computation():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(16000)).astype(
        np.float32)
    got = LogMel(TINY.mel)(torch.from_numpy(wave)[None])[0].numpy()  # (80, M)
    x = np.pad(wave.astype(np.float64), 384, mode="reflect")
    n = (len(x) - 1024) // 256 + 1
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)  # periodic Hann
    frames = np.stack([x[i * 256: i * 256 + 1024] * win for i in range(n)])
    mag = np.sqrt(np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-9).T  # (513, M)
    fb = mel_filterbank(16000, 1024, 80, 0.0, 8000.0)
    want = np.log10(np.maximum(fb @ mag, 1e-5))
    assert got.shape == (80, 62)  # (16000 + 768 - 1024) // 256 + 1
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert abs(int(np.argmax(got[:, 30])) - int(np.argmax(fb[:, 28]))) <= 1  # 440 Hz ≈ bin 28


def test_slaney_filterbank_shape():
    fb = mel_filterbank(16000, 1024, 80, 0.0, 8000.0)
    freqs = np.linspace(0, 8000, 513)
    centres = freqs[fb.argmax(axis=1)]
    assert fb.shape == (80, 513) and (fb >= 0).all()
    assert np.all(np.diff(centres) >= 0)
    below = centres[centres < 900]
    steps = np.diff(below)  # linear part of the Slaney scale: equal spacing (± one FFT bin)
    assert steps.max() - steps.min() <= 2 * 8000 / 512
    # area normalisation: each triangle integrates to about one (in Hz·weight / bandwidth)
    area = fb.sum(axis=1) * (freqs[1] - freqs[0])
    assert np.allclose(area[5:], 1.0, atol=0.05)


def test_encoder_targets_mark_the_frames_and_tokens_of_an_event():
    from v2a_export.train.data import ClipRecord, frame_targets, token_targets

    rec = ClipRecord(7, "wind", "rain", ("glass",), (1.01,), ("glass",))
    times = np.arange(200) / 25.0
    ft = frame_targets(rec, times)  # (200, 4): glass is material 2
    assert ft.shape == (200, 4) and ft[:, [0, 1, 3]].max() == 0
    assert int(np.argmax(ft[:, 2])) == 25 and ft[25, 2] == pytest.approx(np.exp(-0.16))
    tt = token_targets(rec, times, 24)  # (24, 8, 5); frames 24-25 are segment 2 token 4
    hot = np.argwhere(tt[..., 2] > 0)
    assert hot.tolist() == [[2, 4], [3, 0]]  # segments overlap: two tokens saw the frames
    assert tt[2, 4, -1] == pytest.approx((1.01 - 0.94) / 0.08)  # span 0.94-1.02 s


def test_flow_conditions_follow_the_recipe():
    from v2a_export.train.data import ClipRecord
    from v2a_export.train.recipe import FlowRecipe
    from v2a_export.train.stages.flow import choose_condition, event_weights

    rec = ClipRecord(7, "wind", "rain", ("glass", "metal"), (1.0, 2.0), ("glass", "metal"))
    recipe = FlowRecipe()
    rng = np.random.default_rng(0)
    got = [choose_condition(rec, recipe, rng) for _ in range(20000)]
    share = {c: sum(g == c for g in got) / len(got) for c in set(got)}
    assert share[("", 0)] == pytest.approx(recipe.text_drop, abs=0.01)
    assert share[("glass clinks, metal clangs, rain", 1)] == pytest.approx(recipe.swap, abs=0.01)
    assert share[("wind", 0)] + share[("rain", 1)] == pytest.approx(recipe.noun_only, abs=0.01)
    own = 1 - recipe.text_drop - recipe.swap - recipe.noun_only
    assert share[("glass clinks, metal clangs, wind", 0)] == pytest.approx(own, abs=0.015)
    w = event_weights(rec, 250, 3.0, 31.25)  # latent frame i is centred at (i + 0.5) / 31.25 s
    # from 50 ms before to 100 ms after each event: frames 30-33 and 61-65
    assert w[np.array([29, 30, 33, 34, 60, 61, 65, 66])].tolist() == [1, 3, 3, 1, 1, 3, 3, 1]
    assert w.sum() == 250 + 2 * 9
