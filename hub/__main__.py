"""``python -m hub`` is the ``schakel`` command."""

from hub.cli import main

raise SystemExit(main())
