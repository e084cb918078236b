"""``v2a generate``'s progress: the fraction done and the ETA count every stage (a slow vocoder
too, not only the sampling steps), on a scripted sequence of stage events and clock values;
``-v`` / ``-vv`` / ``--log-level`` / ``-q`` set the library's log level."""

from __future__ import annotations

import copy
import logging

import pytest
from click.testing import CliRunner
from v2a_runtime.cli import main
from v2a_runtime.cli.common import log_level
from v2a_runtime.cli.progress import COST, Eta, ProgressBar, plan
from v2a_runtime.pipeline import Progress

W, S = 2, 2  # windows, sampling steps per window
VOCODER = 12.0  # seconds per window; every other stage takes its COST entry in seconds


def script() -> list[tuple[float, Progress]]:
    """(clock, event) of one input as the pipeline and the CLI announce it."""
    out, t = [], 0.0

    def say(stage, window, step=0, seconds=0.0):
        nonlocal t
        out.append((t, Progress(stage, window, W, step, S)))
        t += seconds

    say("text", 0, seconds=COST["text"])
    for w in range(W):
        for stage in ("decode", "encode", "condition"):
            say(stage, w, seconds=COST[stage])
        say("sample", w, seconds=COST["sample"])
        for n in range(1, S + 1):
            say("sample", w, step=n, seconds=COST["sample"] if n < S else 0.0)
        say("vae", w, seconds=COST["vae"])
        say("vocoder", w, seconds=VOCODER)
    for stage in ("loudness", "watermark", "write"):
        say(stage, W - 1, seconds=COST[stage])
    return out


def test_plan_lists_every_stage_and_step():
    tasks = plan(W, S)
    assert tasks[0] == ("text", 0) and tasks[-3:] == [("loudness", 1), ("watermark", 1),
                                                      ("write", 1)]  # fmt: skip
    assert [s for s, w in tasks if w == 0][1:] == [
        "decode", "encode", "condition", "sample", "sample", "vae", "vocoder"]  # fmt: skip
    assert len(tasks) == 1 + W * (5 + S) + 3


def test_fraction_and_eta_weigh_every_stage_by_its_measured_share():
    eta, seen, states = Eta(), {}, {}
    for t, event in script():
        eta.update(event, t)
        seen[(event.stage, event.window, event.step)] = (t, eta.fraction(t), eta.eta(t))
        states[(event.stage, event.window, event.step)] = copy.deepcopy(eta)
    # before anything is measured: the COST table alone, no ETA
    first = Eta()
    first.update(Progress("text", 0, W, 0, S), 0.0)
    assert first.fraction(0.0) == 0.0 and first.eta(0.0) is None
    first.update(Progress("decode", 0, W, 0, S), 0.0)  # text took no time: still unmeasured
    assert first.fraction(0.0) == pytest.approx(COST["text"] / sum(COST[s] for s, _ in plan(W, S)))
    # window 2 starts at 22.5 s: window 1 measured every stage (its vocoder 12 s); loudness,
    # watermark and write are not measured yet and cost COST x 22.5 s / 16.5 units
    t, fraction, left = seen[("decode", 1, 0)]
    assert t == 22.5
    unit = 22.5 / (1 + 2 + 3 + 0.5 + 2 * 1 + 2 + 6)
    remaining = 2 + 3 + 0.5 + 2 * 1 + 2 + VOCODER + (1 + 1 + 3) * unit
    assert left == pytest.approx(remaining)
    assert fraction == pytest.approx(22.5 / (22.5 + remaining))  # 0.44; sampling alone: 0.5
    # one second into window 2's decode (2 s measured): 1 s less to go
    at = states[("decode", 1, 0)]
    assert at.eta(23.5) == pytest.approx(remaining - 1)
    assert at.fraction(23.5) == pytest.approx(23.5 / (23.5 + remaining - 1))
    # window 2's vocoder starts at 32 s: the measured 12 s are still ahead
    t, fraction, left = seen[("vocoder", 1, 0)]
    assert t == 32.0 and left == pytest.approx(VOCODER + 5 * 32.0 / (16.5 + 9.5))
    # write starts at 46 s: its 3 units at the measured 46 s / 34 units per unit
    t, fraction, left = seen[("write", 1, 0)]
    assert t == 46.0 and left == pytest.approx(3 * 46.0 / 34.0)
    fractions = [f for _, f, _ in seen.values()]
    assert fractions == sorted(fractions) and 0.9 < fractions[-1] < 1.0


def test_terminal_bar_follows_the_fraction():
    events = script()
    now = {"t": 0.0}
    with ProgressBar(enabled=True, tty=True, clock=lambda: now["t"]) as bar:
        for t, event in events:
            now["t"] = t
            bar.update(event)
            assert bar.pos == min(round(bar.eta.fraction(t) * bar.LENGTH), bar.LENGTH)
        assert 900 < bar.pos < 1000
        assert bar.label == "write (window 2/2)"
        assert bar._show(bar.label) == f"write (window 2/2), eta 0:0{round(3 * 46 / 34)}"


@pytest.mark.parametrize(
    "quiet, level, verbose, expected",
    [
        (False, None, 0, "WARNING"), (False, None, 1, "INFO"), (False, None, 2, "DEBUG"),
        (False, "error", 1, "INFO"), (False, "debug", 1, "DEBUG"), (True, None, 2, "ERROR"),
        (False, "info", 0, "INFO"),
    ],
)  # fmt: skip
def test_log_level(quiet, level, verbose, expected):
    assert log_level(quiet=quiet, level=level, verbose=verbose) == expected


@pytest.mark.parametrize("flags, expected", [(["-v"], logging.INFO), (["-vv"], logging.DEBUG),
                                             ([], logging.WARNING)])  # fmt: skip
def test_generate_v_sets_the_library_log_level(tmp_path, flags, expected):
    result = CliRunner().invoke(main, ["generate", *flags, str(tmp_path / "missing.mp4")])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")
    assert logging.getLogger("v2a_runtime").level == expected
