"""``python -m criolib.conmon``: the ``criolib conmon`` commands (run, status, wait, exec,
attach, reopen-log, resize, ls), as ``criolib conmon ...`` runs them.

This is an entry point like ``criolib/__main__.py``, not library code: the commands
live with the other command groups in criolib.cli, which the library packages do not
import (tests/test_package.py); the entry point loads it by name when it runs.
"""

from __future__ import annotations

import importlib
import sys

if __name__ == "__main__":
    cli = importlib.import_module("criolib.cli")
    sys.exit(cli.main(["conmon", *sys.argv[1:]]))
