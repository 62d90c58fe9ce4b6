"""``python -m criolib`` is the ``criolib`` command."""

from criolib.cli import main

raise SystemExit(main())
