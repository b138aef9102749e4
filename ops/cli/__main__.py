"""``python -m citywatch.ops.cli``: the same as the ``citywatch`` command."""

from citywatch.ops.cli import app

if __name__ == "__main__":
    app()
