"""``v2a-export``: the torch-side command line (the only place that prints, with the ``v2a``
CLI of the runtime). One module per command group:

- :mod:`.check`: ``check-fixture``, ``inspect-weights``;
- :mod:`.export`: ``export``, ``validate``;
- :mod:`.precision`: ``convert-precision``;
- :mod:`.engines`: ``build-engines``;
- :mod:`.trt`: ``check-trt`` (the TensorRT parser check the other commands also run);
- :mod:`.triton`: ``triton`` (a Triton model repository; the writer is the runtime's);
- :mod:`.tune`: ``tune-sampler`` (few-step samplers tuned on a bundle; torch-free);
- :mod:`.train`: ``python -m v2a_export.train`` (a program of its own).

Bad input (usage errors included) gets a one-line ``error: ...`` and exit status 2, like ``v2a``
(``v2a_runtime.cli.common.OneLineGroup``); a check that runs and fails exits 1
(:mod:`.common`); Ctrl-C exits 130.
"""

from __future__ import annotations

import click
from v2a_runtime.cli.common import OneLineGroup

from .check import check_fixture_cmd, inspect_weights_cmd
from .common import EXIT_BAD_INPUT, EXIT_FAILED, InputError
from .engines import build_engines_cmd
from .export import export_cmd, validate_cmd
from .precision import convert_precision_cmd
from .trt import check_trt_cmd
from .triton import triton_cmd
from .tune import tune_sampler_cmd


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="v2a-export")
def main() -> None:
    """Export MMAudio-family video-to-audio models; check them against the reference."""


for command in (check_fixture_cmd, inspect_weights_cmd, export_cmd, validate_cmd,
                build_engines_cmd, convert_precision_cmd, check_trt_cmd, triton_cmd,
                tune_sampler_cmd):  # fmt: skip
    main.add_command(command)

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILED", "InputError", "main"]
