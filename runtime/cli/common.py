"""What every ``v2a`` command shares: one-line errors, the notes before a run, the progress bar.

Failure policy (DESIGN.md §8): every user mistake -- a missing or unreadable input, no video
stream, a video shorter than one sync segment, an unknown output extension, the output equal to
the input, an existing output without ``--force``, an unreadable or modified bundle -- prints
one line ``error: ...`` on stderr and exits with status 2, before any output exists.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from ..pipeline import Pipeline, Progress

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class Failure(Exception):
    """A user-facing failure: one line, exit status 2."""


class OneLineGroup(click.Group):
    """A click group whose usage errors (unknown option, missing argument, bad choice) and
    ``ClickException``s are one ``error: ...`` line on stderr (exit status 2, or the
    exception's), and whose Ctrl-C is ``error: interrupted`` with exit status 130, instead of
    click's multi-line usage block, ``Error:`` and ``Aborted!``. Shared by ``v2a`` and
    ``v2a-export``."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            with _terminate_unwinds():
                value = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {_one_line(e.format_message())}{hint}", err=True)
            sys.exit(e.exit_code)
        except click.ClickException as e:
            click.echo(f"error: {_one_line(e.format_message())}", err=True)
            sys.exit(e.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("error: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(value if isinstance(value, int) else 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


@contextmanager
def _terminate_unwinds() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) in the main thread, so ``finally`` blocks (temporary
    files, ``.partial-PID`` directories) are cleaned up as on Ctrl-C; restored after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, _frame):
        click.echo("error: terminated; no output was written", err=True)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn library errors (ValueError subclasses: MediaError, BundleError, BackendError, bad
    options) and OS errors into one ``error:`` line and exit status 2; never a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo("error: interrupted; no output was written", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except (ValueError, OSError, Failure) as e:
        message = " ".join(str(e).split()) or type(e).__name__
        click.echo(f"error: {message}", err=True)
        sys.exit(EXIT_ERROR)


def notes(pipe: Pipeline) -> None:
    model = pipe.bundle.manifest.model
    if model.weights == "random":
        click.echo(
            f"note: the {model.variant!r} bundle has random, untrained weights: the "
            "output is noise, not a real soundtrack",
            err=True,
        )
    if pipe.key.is_demo:
        click.echo(
            "note: watermarking with the public demo key (anyone can verify or forge "
            "it); set V2A_WATERMARK_KEY or --key-file",
            err=True,
        )


class ProgressBar:
    """Progress on stderr. In a terminal: one click bar over all sampling steps of all windows
    (with its ETA). Elsewhere (a log file, a pipe): one plain line per stage and window, no
    bar. ``prefix`` names the item in a batch (``[2/5] clip.mp4: ``)."""

    def __init__(self, *, enabled: bool, prefix: str = "", tty: bool | None = None) -> None:
        self.enabled = enabled
        self.prefix = prefix
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.bar = None
        self.done = 0

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.render_finish()

    def update(self, event: Progress) -> None:
        if not self.enabled:
            return
        if not self.tty:
            if event.step == 0:
                click.echo(f"{self.prefix}{event.stage} (window {event.window + 1}/"
                           f"{event.windows})", err=True)  # fmt: skip
            return
        if event.stage != "sample" or event.step == 0:
            return
        if self.bar is None:
            self.bar = click.progressbar(
                length=event.windows * event.steps, label=f"{self.prefix}sampling",
                file=sys.stderr, show_pos=True,
            )  # fmt: skip
            self.bar.render_progress()
        done = event.window * event.steps + event.step
        self.bar.update(done - self.done)
        self.done = done


class _Prefixed(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {' '.join(record.getMessage().split())}"


def setup_logging(*, quiet: bool = False, level: str | None = None) -> None:
    """The library's log records on stderr as ``warning: ...`` lines; ``-q`` keeps errors
    only, ``--log-level info|debug`` shows more."""
    root = logging.getLogger("v2a_runtime")
    for handler in list(root.handlers):
        if getattr(handler, "v2a_cli", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.v2a_cli = True
    handler.setFormatter(_Prefixed())
    root.addHandler(handler)
    root.propagate = False
    name = "ERROR" if quiet else (level or "WARNING").upper()
    root.setLevel(getattr(logging, name))


__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "Failure",
    "OneLineGroup",
    "ProgressBar",
    "notes",
    "one_line_errors",
    "setup_logging",
]
