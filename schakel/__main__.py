"""``python -m schakel`` is the ``schakel`` command."""

from schakel.hub.cli import main

raise SystemExit(main())
