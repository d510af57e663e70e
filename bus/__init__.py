"""The one home of ``nats`` for connecting and for the key log (more of the NATS layer is to move
here: hub/transport.py, the stream access in hub/service.py, hub/audit.py, hub/cli.py and the
SDK's pull subscription).

Depends on ``contracts`` and ``keys``; ``hub`` and ``adapters`` use it, never each other.
"""

from bus.connection import Credentials, connect
from bus.keylog import DirectoryFollower, append_key_event, follow_directory, read_keylog

__all__ = [
    "Credentials",
    "DirectoryFollower",
    "append_key_event",
    "connect",
    "follow_directory",
    "read_keylog",
]
