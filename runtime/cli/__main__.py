"""``python -m v2a_runtime.cli``: the ``v2a`` command."""

from . import main

if __name__ == "__main__":
    main()
