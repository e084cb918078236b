"""``python -m v2a_export.cli``: the ``v2a-export`` command."""

from . import main

if __name__ == "__main__":
    main()
