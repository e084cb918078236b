"""``python -m v2a_runtime.cli``: the ``v2a`` command."""

from . import main

main()
