"""``v2a``: the runtime's command line (the only place that prints or draws progress).

    v2a generate VIDEO ...                  :mod:`.generate`
    v2a info [BUNDLE] [--json]              :mod:`.info`
    v2a watermark embed|verify|keygen ...   :mod:`.watermark`
    v2a demo [--seed N] [--out DIR]         :mod:`.demo`
    v2a serve REPO ...                      :mod:`.serve`
    v2a bench [BUNDLE ...] [--scenario S]   :mod:`.bench` (the ``bench`` extra)

Every user mistake, click's usage errors included, is one ``error: ...`` line on stderr and exit
status 2; Ctrl-C exits 130 (:mod:`.common`).
"""

from __future__ import annotations

import click

from .. import __version__
from .bench import bench
from .common import OneLineGroup
from .demo import demo
from .generate import generate
from .info import info
from .serve import serve
from .watermark import watermark


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="v2a")
def main() -> None:
    """Generate synchronized soundtracks for videos (torch-free runtime of v2a-export)."""


for command in (generate, info, demo, watermark, serve, bench):
    main.add_command(command)

__all__ = ["main"]
