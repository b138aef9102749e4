"""``python -m citywatch.ops.cli``: the same as the ``citywatch`` command."""

from citywatch.ops.cli import main

if __name__ == "__main__":
    main()
