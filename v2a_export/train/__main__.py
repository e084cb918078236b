"""``python -m v2a_export.train``: see :mod:`v2a_export.cli.train`."""

from v2a_export.cli.train import main

if __name__ == "__main__":
    main()
