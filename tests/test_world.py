"""The procedural world: determinism, physics known answers, visible events, frames, video,
audio stems, captions, prompts and the seed split."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest
from v2a_runtime import world
from v2a_runtime.world.physics import Body, positions_at, simulate
from v2a_runtime.world.sound import impact_gain, impact_sound
from v2a_runtime.world.spec import (
    FLOOR_Y,
    GRAVITY,
    MIN_IMPACT_SPEED,
    VIEW_LEFT,
    VIEW_SIZE,
    VIEW_TOP,
    WALL_LEFT,
    WALL_RIGHT,
)

SEEDS = range(world.HELD_OUT_SEED_BASE, world.HELD_OUT_SEED_BASE + 60)


@pytest.fixture(scope="module")
def scenes():
    return [world.make_scene(s) for s in SEEDS]


def test_same_seed_same_scene_frames_and_audio():
    a, b = world.make_scene(123, 5.0), world.make_scene(123, 5.0)
    assert a == b
    times = np.array([0.0, 0.37, 1.234, 4.99])
    assert np.array_equal(world.render_frames(a, times, 64), world.render_frames(b, times, 64))
    assert np.array_equal(world.render_audio(a), world.render_audio(b))
    c = world.make_scene(124, 5.0)
    assert c != a
    assert not np.array_equal(world.render_audio(a), world.render_audio(c))


def test_bad_arguments_are_refused_with_the_allowed_set():
    with pytest.raises(ValueError, match=r"duration must be in \[2.0, 10.0\]"):
        world.make_scene(1, 1.0)
    with pytest.raises(ValueError, match="non-negative integer"):
        world.make_scene(-1)
    with pytest.raises(ValueError, match="known: wind, rain, crickets, none"):
        world.make_scene(1, ambience="snow")
    with pytest.raises(ValueError, match=r"size must be an integer in \[16, 1024\]"):
        world.render_frames(world.make_scene(1), [0.0], 8)


def test_free_fall_bounces_match_the_closed_form():
    # dropped from rest: contacts at t_k, speeds v0 * e^k, until the speed falls below the
    # rest threshold (then the body rests on the floor)
    h, e, y0 = 0.1, 0.5, 1.3
    body = Body(0.1, h, 0.1, 1.0, e, (1.0, y0), (0.0, 0.0))
    segments, contacts = simulate((body,), 10.0)
    v0 = np.sqrt(2 * GRAVITY * (y0 - h))
    n = int(np.floor(np.log(MIN_IMPACT_SPEED / v0) / np.log(e))) + 1  # bounces above rest
    speeds = v0 * e ** np.arange(n + 1)
    flights = 2 * e * speeds[:-1] / GRAVITY  # up and down again after each bounce
    times = np.sqrt(2 * (y0 - h) / GRAVITY) + np.concatenate([[0.0], np.cumsum(flights)])
    assert [c.kind for c in contacts] == ["floor"] * (n + 1)
    np.testing.assert_allclose([c.time for c in contacts], times, rtol=0, atol=1e-12)
    np.testing.assert_allclose([c.speed for c in contacts], speeds, rtol=1e-12)
    assert contacts[-1].speed < MIN_IMPACT_SPEED <= contacts[-2].speed
    pos, _ = positions_at(segments[0], np.array([contacts[-1].time + 1.0]))
    assert pos[0, 1] == pytest.approx(FLOOR_Y + h) and segments[0][-1].accel_y == 0.0


def test_head_on_collision_and_wall_contact_times_are_exact():
    # two equal bodies thrown at each other at the same height: relative motion is linear
    a = Body(0.1, 0.1, 0.1, 1.0, 1.0, (0.5, 1.0), (1.0, 2.0))
    b = Body(0.1, 0.1, 0.1, 1.0, 1.0, (1.5, 1.0), (-1.0, 2.0))
    _, contacts = simulate((a, b), 0.5)
    hit = contacts[0]
    assert hit.kind == "object" and hit.bodies == (0, 1)
    assert hit.time == pytest.approx((1.0 - 0.2) / 2.0, abs=1e-12)
    assert hit.speed == pytest.approx(2.0, abs=1e-9)
    # a body moving left reaches the wall when x - w = 0
    c = Body(0.15, 0.1, 0.15, 1.0, 0.5, (1.0, 1.5), (-2.0, 0.0))
    _, contacts = simulate((c,), 0.6)
    assert contacts[0].kind == "wall"
    assert contacts[0].time == pytest.approx((1.0 - 0.15 - WALL_LEFT) / 2.0, abs=1e-12)


def test_landing_on_a_resting_body_solves_the_quartic():
    rest = Body(0.1, 0.1, 0.1, 1.0, 0.5, (1.0, 0.1), (0.0, 0.0), resting=True)
    drop = Body(0.1, 0.1, 0.1, 1.0, 0.5, (1.05, 1.2), (0.0, 0.0))
    segs, contacts = simulate((rest, drop), 1.0)
    hit = contacts[0]
    assert hit.kind == "object"
    # |p_drop(t) - p_rest| = 0.2 with p_drop(t) = (1.05, 1.2 - g t^2 / 2)
    expected = np.sqrt(2 * (1.2 - 0.1 - np.sqrt(0.2**2 - 0.05**2)) / GRAVITY)
    assert hit.time == pytest.approx(expected, abs=1e-9)
    assert all(s.position == (1.0, 0.1) for s in segs[0])  # a resting body never moves


def test_event_spread_over_held_out_scenes(scenes):
    counts = [len(s.events) for s in scenes]
    assert min(counts) >= 1 and max(counts) <= 8
    assert np.mean(counts) > 2.5 and sum(c >= 5 for c in counts) >= 5
    gaps = np.concatenate([np.diff(s.event_times) for s in scenes])
    assert np.mean(gaps < 0.05) > 0.03  # some near or overlapping events
    assert sum(o.role == "rest" for s in scenes for o in s.objects) >= 5
    assert {e.kind for s in scenes for e in s.events} == {"floor", "wall", "object"}
    assert {s.ambience for s in scenes} == set(world.AMBIENCE_NAMES)
    assert {e.material for s in scenes for e in s.events} == set(world.MATERIAL_NAMES)
    assert all(e.speed >= MIN_IMPACT_SPEED for s in scenes for e in s.events)
    assert all(0.1 <= e.time < s.duration for s in scenes for e in s.events)


def test_contacts_are_at_the_floor_or_walls_and_visible(scenes):
    for s in scenes:
        for e in s.events:
            obj = s.objects[e.object]
            pos, active = s.positions(np.array([e.time]))
            (x, y), on = pos[0, e.object], active[0, e.object]
            assert on
            if e.kind == "floor":
                assert y - obj.half_height == pytest.approx(FLOOR_Y, abs=1e-9)
            elif e.kind == "wall":
                assert min(x - obj.half_width - WALL_LEFT,
                           WALL_RIGHT - obj.half_width - x) == pytest.approx(0.0, abs=1e-9)
            assert VIEW_LEFT <= e.position[0] <= VIEW_LEFT + VIEW_SIZE
            assert y <= VIEW_TOP  # the object's centre is on screen


def test_floor_bounces_lose_energy(scenes):
    # consecutive floor events of one object: the second is slower, by exactly the material's
    # restitution when nothing touched the object in between (a silent contact may have)
    exact = checked = 0
    for s in scenes:
        per_object: dict[int, list] = {}
        for e in s.events:
            per_object.setdefault(e.object, []).append(e)
        for evs in per_object.values():
            for a, b in zip(evs[:-1], evs[1:], strict=True):
                others = [e for e in s.events if a.time < e.time < b.time]
                if a.kind == b.kind == "floor" and not others:
                    e_mat = world.MATERIALS[a.material].restitution
                    assert b.speed < a.speed
                    exact += b.speed == pytest.approx(e_mat * a.speed, rel=1e-9)
                    checked += 1
    assert checked > 20 and exact >= 0.9 * checked


def test_objects_are_drawn_where_they_are_at_contact(scenes):
    checked = 0
    for s in scenes[:25]:
        for e in s.events:
            obj = s.objects[e.object]
            pos, _ = s.positions(np.array([e.time]))
            others = [k for k in range(len(s.objects)) if k != e.object
                      and np.hypot(*(pos[0, k] - pos[0, e.object])) < 0.5]
            if others:
                continue
            img = world.render_frames(s, [e.time], 128)[0]
            x, y = pos[0, e.object]
            col = int((x - VIEW_LEFT) / VIEW_SIZE * 128)
            row = int((VIEW_TOP - y) / VIEW_SIZE * 128)
            assert np.abs(img[row, col].astype(int) - obj.colour).max() <= 2
            checked += 1
    assert checked >= 20


def test_frames_show_sub_pixel_motion_at_64px():
    s = next(s for s in map(world.make_scene, SEEDS) if any(o.role == "air" for o in s.objects))
    frames = world.render_frames(s, np.array([0.0, 0.01, 0.02]), 64)
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == np.uint8
    d1 = np.abs(frames[1].astype(int) - frames[0]).sum()
    d2 = np.abs(frames[2].astype(int) - frames[0]).sum()
    assert 0 < d1 < d2  # moving 1-3 cm (< 1 px) changes the anti-aliased edges, growing


def test_backgrounds_look_different_per_ambience():
    means = {a: world.render_frames(world.make_scene(5, ambience=a), [1.0], 64)[0]
             .reshape(-1, 3).mean(axis=0) for a in world.AMBIENCE_NAMES}
    names = list(means)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(means[a] - means[b]).max() > 30, (a, b)


def test_write_video_round_trip(tmp_path):
    s = world.make_scene(7, 2.0)
    path = world.write_video(s, tmp_path / "clip.mp4", size=64)
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (64, 64, 25)
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)])
    assert decoded.shape == (50, 64, 64, 3)
    expected = world.render_frames(s, world.frame_times(2.0, 25), 64)
    assert np.abs(decoded.astype(int) - expected).mean() < 4.0  # codec error only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]  # no partial file
    with pytest.raises(ValueError, match=".mp4, .mkv, .mov"):
        world.write_video(s, tmp_path / "clip.gif")


def test_decoded_times_match_the_runtime_decoder(tmp_path):
    from v2a_runtime.media import read_frames

    s = next(s for s in map(world.make_scene, SEEDS) if any(o.role == "air" for o in s.objects))
    s = world.make_scene(s.seed, 2.0)
    frames = read_frames(world.write_video(s, tmp_path / "clip.mkv", size=64), clip_size=64,
                         sync_size=64)
    assert frames.clip.shape == (16, 64, 64, 3) and frames.sync.shape == (50, 64, 64, 3)
    clip = world.render_frames(s, world.decoded_times(2.0, 8.0), 64)
    sync = world.render_frames(s, world.decoded_times(2.0, 25.0), 64)
    assert np.abs(frames.clip.astype(int) - clip).mean() < 4.0
    assert np.abs(frames.sync.astype(int) - sync).mean() < 4.0
    np.testing.assert_array_equal(world.decoded_times(2.0, 25.0), world.frame_times(2.0, 25.0))
    np.testing.assert_allclose(world.decoded_times(1.0, 8.0)[:4], [0.0, 0.16, 0.28, 0.40])


def test_audio_stems(scenes):
    s = scenes[0]
    stems = world.render_stems(s)
    n = int(s.duration * world.SAMPLE_RATE)
    assert stems.impacts.shape == stems.ambience.shape == (n,)
    assert stems.mix.dtype == np.float32 and np.abs(stems.mix).max() <= 1.0
    first = int(round(s.events[0].time * world.SAMPLE_RATE))
    assert not stems.impacts[:first].any() and np.abs(stems.impacts[first:first + 16]).max() > 0
    np.testing.assert_array_equal(world.render_audio(s), stems.mix)
    for a, spec in world.AMBIENCES.items():
        amb = world.render_stems(world.make_scene(3, ambience=a)).ambience
        level = 10 * np.log10(np.mean(amb.astype(np.float64) ** 2))
        assert level == pytest.approx(spec.level_db, abs=0.1)  # + room tone 36 dB lower


def test_impact_loudness_follows_speed_and_attack_is_sharp():
    rng = np.random.default_rng
    for m in world.MATERIAL_NAMES:
        spec = world.MATERIALS[m]
        slow = impact_sound(m, 1.5, spec.f0[0], spec.decay[0], rng(0))
        fast = impact_sound(m, 6.0, spec.f0[0], spec.decay[0], rng(0))
        assert np.abs(fast).max() == pytest.approx(impact_gain(6.0))
        assert np.abs(slow).max() == pytest.approx(impact_gain(1.5))
        assert np.abs(fast[:16]).max() > 0.2 * impact_gain(6.0)  # within the first 1 ms
    assert impact_gain(6.0) / impact_gain(1.5) == pytest.approx(4.0**0.9)


def test_ground_truth_json(scenes):
    s = scenes[3]
    gt = json.loads(json.dumps(s.ground_truth()))
    assert gt["caption"] == s.caption and gt["ambience"] == s.ambience
    assert [e["time"] for e in gt["events"]] == pytest.approx(s.event_times.tolist(), abs=1e-6)
    assert gt["materials"] == list(s.materials)
    assert {"material", "speed", "kind", "object"} <= set(gt["events"][0])


def test_captions_and_prompts():
    assert world.caption(["glass", "metal", "glass"], "rain") == "glass clinks, metal clangs, rain"
    assert world.caption(["rubber"], "none") == "rubber thuds"
    assert world.caption(["wood"], "crickets") == "wood knocks, crickets"
    mats = ("wood", "metal")
    assert world.prompts(mats, "wind", "positive") == ("wood knocks, metal clangs, wind", "")
    assert world.prompts(mats, "wind", "negative") == ("wood knocks, metal clangs", "wind")
    assert world.prompts(mats, "wind", world.PromptMode.NEITHER) == ("wood knocks, metal clangs",
                                                                     "")
    with pytest.raises(ValueError, match="cannot be named"):
        world.prompts(mats, "none", "positive")
    with pytest.raises(ValueError, match="known: positive, negative, neither"):
        world.prompts(mats, "rain", "louder")
    with pytest.raises(ValueError, match="known: metal, wood, glass, rubber"):
        world.caption(["stone"], "rain")


def test_seed_split():
    assert list(world.held_out_seeds(3)) == [10**6, 10**6 + 1, 10**6 + 2]
    assert world.is_held_out(10**6) and not world.is_held_out(10**6 - 1)


def test_world_imports_and_runs_with_torch_unimportable():
    script = textwrap.dedent("""
        import importlib.abc, sys
        class BlockTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError(name)
        sys.meta_path.insert(0, BlockTorch())
        from v2a_runtime import world
        from v2a_runtime.world import metrics
        s = world.make_scene(1, 2.0)
        world.render_frames(s, [0.5], 32)
        metrics.evaluate_clip(world.render_audio(s), s.ground_truth())
        assert not [k for k in sys.modules if k.split(".")[0] == "torch"]
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
