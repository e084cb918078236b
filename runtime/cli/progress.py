"""Progress of one ``v2a generate`` input: every stage that takes time, and an ETA over them.

The pipeline announces each stage as it starts (``Progress`` with ``step == 0``) and each
sampling step as it ends; the CLI adds ``write`` (encode and mux) after the audio exists. The
work of one input is known in advance from the first event (windows, steps per window)::

    text, then per window: decode, encode, condition, sample x steps, vae, vocoder,
    then loudness, watermark, write

A stage runs until the next event. Its remaining cost is estimated in seconds: a stage that
has run at least once costs its measured mean (``sample``: per step); one that has not costs
its entry of ``COST`` (in sampling-step units) times the seconds per unit measured so far.
The fraction done is ``elapsed / (elapsed + remaining)``, so a slow vocoder or decoder shows
in the bar and in the ETA, not only the sampling steps.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import click

from ..pipeline import Progress

# A stage's cost before it has been measured, in units of one sampling step (one denoiser
# call with guidance) of one window. Rough CPU shares of the shipped model; only a prior: the
# first measurement of a stage replaces its entry.
COST = {
    "text": 1.0, "decode": 2.0, "encode": 3.0, "condition": 0.5, "sample": 1.0, "vae": 2.0,
    "vocoder": 6.0, "loudness": 1.0, "watermark": 1.0, "write": 3.0,
}  # fmt: skip
WINDOW_STAGES = ("decode", "encode", "condition", "sample", "vae", "vocoder")
FINAL_STAGES = ("loudness", "watermark", "write")


def plan(windows: int, steps: int) -> list[tuple[str, int]]:
    """The tasks of one input, in order: (stage, window); ``sample`` once per step."""
    tasks = [("text", 0)]
    for w in range(windows):
        for stage in WINDOW_STAGES:
            tasks += [(stage, w)] * (max(steps, 1) if stage == "sample" else 1)
    return tasks + [(stage, max(windows - 1, 0)) for stage in FINAL_STAGES]


class Eta:
    """The fraction done and the seconds left, from the stage events and a clock (``now``:
    seconds, any origin; the CLI passes ``time.perf_counter()``)."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, int]] = []
        self.index = -1  # the task under way
        self.started = 0.0  # when it started
        self.spent: dict[str, list[float]] = {}  # measured seconds per finished task
        self.elapsed = 0.0  # seconds of the finished tasks

    def update(self, event: Progress, now: float) -> None:
        if not self.tasks:
            self.tasks = plan(event.windows, event.steps)
        target = self._find(event)
        if target is None or target <= self.index:
            return  # not in the plan (a truncated video ended early): keep the estimate
        if self.index >= 0:  # the task under way ends now
            seconds = max(now - self.started, 0.0)
            self.spent.setdefault(self.tasks[self.index][0], []).append(seconds)
            self.elapsed += seconds
        self.index, self.started = target, now

    def _find(self, event: Progress) -> int | None:
        """The index of the task that starts with this event (sampling step n ended: the
        (n+1)-th step of the window starts; after the last, the index of ``vae``)."""
        try:
            first = self.tasks.index((event.stage, event.window))
        except ValueError:
            return None
        return first + (event.step if event.stage == "sample" else 0)

    def _unit(self) -> float | None:
        """Measured seconds per COST unit, over every stage measured so far."""
        seconds = sum(sum(v) for v in self.spent.values())
        units = sum(COST.get(s, 1.0) * len(v) for s, v in self.spent.items())
        return seconds / units if units > 0 and seconds > 0 else None

    def cost(self, stage: str) -> float:
        """Estimated seconds of one task of ``stage`` (COST units when nothing is measured)."""
        if self.spent.get(stage):
            return sum(self.spent[stage]) / len(self.spent[stage])
        unit = self._unit()
        return COST.get(stage, 1.0) * (1.0 if unit is None else unit)

    def remaining(self, now: float) -> float:
        """Seconds (COST units before any measurement) left, from ``now``."""
        if not self.tasks:
            return 0.0
        if self.index < 0:
            return sum(self.cost(stage) for stage, _ in self.tasks)
        current = self.cost(self.tasks[self.index][0]) - max(now - self.started, 0.0)
        rest = sum(self.cost(stage) for stage, _ in self.tasks[self.index + 1 :])
        return max(current, 0.0) + rest

    def fraction(self, now: float) -> float:
        if not self.tasks or self.index < 0:
            return 0.0
        if self._unit() is None:  # nothing measured yet: COST units alone
            done = sum(COST.get(s, 1.0) for s, _ in self.tasks[: self.index])
            return done / sum(COST.get(s, 1.0) for s, _ in self.tasks)
        done = self.elapsed + max(now - self.started, 0.0)
        left = self.remaining(now)
        return done / (done + left) if done + left > 0 else 1.0

    def eta(self, now: float) -> float | None:
        """Seconds left, or None before anything is measured."""
        return None if self._unit() is None else self.remaining(now)


class ProgressBar:
    """Progress on stderr. In a terminal: one click bar over every stage of the input with
    the ETA of :class:`Eta`. Elsewhere (a log file, a pipe): one plain line per stage and
    window, no bar. ``prefix`` names the item in a batch (``[2/5] clip.mp4: ``)."""

    LENGTH = 1000  # bar positions

    def __init__(self, *, enabled: bool, prefix: str = "", tty: bool | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        self.enabled = enabled
        self.prefix = prefix
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.clock = clock
        self.eta = Eta()
        self.bar = None
        self.pos = 0
        self.last: Progress | None = None
        self.label = ""

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            if exc[0] is None:
                self.bar.update(self.LENGTH - self.pos, "done")
            self.bar.render_finish()

    def stage(self, name: str) -> None:
        """A stage the CLI runs after the pipeline (``write``), in the last window."""
        if self.last is not None:
            self.update(Progress(name, self.last.windows - 1, self.last.windows))

    def update(self, event: Progress) -> None:
        if not self.enabled:
            return
        self.last = event
        if not self.tty:
            if event.step == 0:
                click.echo(f"{self.prefix}{event.stage} (window {event.window + 1}/"
                           f"{event.windows})", err=True)  # fmt: skip
            return
        now = self.clock()
        self.eta.update(event, now)
        step = f" {event.step}/{event.steps}" if event.stage == "sample" else ""
        self.label = f"{event.stage}{step} (window {event.window + 1}/{event.windows})"
        if self.bar is None:
            self.bar = click.progressbar(
                length=self.LENGTH, label=f"{self.prefix}generating", file=sys.stderr,
                show_eta=False, item_show_func=self._show,
            )  # fmt: skip
            self.bar.render_progress()
        pos = min(round(self.eta.fraction(now) * self.LENGTH), self.LENGTH)
        self.bar.update(max(pos - self.pos, 0), self.label)
        self.pos = max(pos, self.pos)

    def _show(self, label: str | None) -> str:
        left = self.eta.eta(self.clock())
        if left is None:
            return label or ""
        m, s = divmod(round(left), 60)
        return f"{label or ''}, eta {m:d}:{s:02d}"


__all__ = ["COST", "Eta", "ProgressBar", "plan"]
