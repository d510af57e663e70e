"""``python -m schakel`` is the ``schakel`` command."""

from schakel.cli import main

raise SystemExit(main())
