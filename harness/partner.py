"""A partner from the command line (``schakel partner send|receive``): the SDK driven by a
script, for trying a deployment out and for the walkthrough in the README.

It sends example messages of a type (``contracts/examples.py``) and receives, opens,
validates and acknowledges deliveries, printing one line per item: what a back office's
adapter does, without a back office.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from schakel.adapters.client import Delivery, PartnerClient, Refusal, Rejected
from schakel.bus import TransportError
from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import MessageId, OrgId, new_message_id

__all__ = ["Received", "receive_messages", "send_messages"]

# How long a send waits for the hub to be ready for a partner that was just registered
# (the hub makes its streams within a second or two of the registration).
_SEND_PATIENCE = 30.0


async def send_messages(
    client: PartnerClient,
    message_type: MessageType,
    to: Sequence[OrgId],
    count: int,
    out: Callable[[str], None],
) -> list[MessageId]:
    """Send ``count`` example messages of ``message_type`` to ``to``; print each id."""
    sent = []
    for _ in range(count):
        body = example_body(message_type)
        draft = example_draft(message_type, body)
        message_id = new_message_id()
        deadline = time.monotonic() + _SEND_PATIENCE
        while True:
            try:
                await client.send(body, draft, to, message_id=message_id)
                break
            except TransportError:
                # Nothing was stored (the same id is sent again, so a retry cannot double it).
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        out(f"sent {message_id} {message_type} to {', '.join(to)}")
        sent.append(message_id)
    return sent


@dataclass
class Received:
    """What ``receive_messages`` saw."""

    deliveries: int = 0
    refusals: int = 0
    rejected: int = 0


async def receive_messages(
    client: PartnerClient,
    count: int,
    timeout: float,
    out: Callable[[str], None],
    *,
    refusals: bool = False,
) -> Received:
    """Take deliveries and refusal notices until ``count`` deliveries (with ``refusals``:
    refusal notices) arrived or nothing came for ``timeout`` seconds; acknowledge each after
    printing it."""
    seen = Received()
    while (seen.refusals if refusals else seen.deliveries) < count:
        item = await client.receive(timeout=timeout)
        if item is None:
            break
        if isinstance(item, Delivery):
            seen.deliveries += 1
            out(f"received {item.message_id} {item.header.message_type} "
                f"from {item.header.sender.org}")  # fmt: skip
            await item.ack()
        elif isinstance(item, Refusal):
            seen.refusals += 1
            out(f"refused {item.notice.message_id} {item.notice.reason}")
            await item.ack()
        elif isinstance(item, Rejected):
            seen.rejected += 1
            out(f"REJECTED {item.message_id}: {item.reason}")
    return seen
