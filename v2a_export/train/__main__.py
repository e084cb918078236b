"""``python -m v2a_export.train``: see :mod:`v2a_export.train.train_cli`."""

from .train_cli import main

main()
