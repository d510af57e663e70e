"""Hub instances share the inbound partitions, and so the cases: each case is routed by one
instance (no conflicts on its record); when an instance stops, the others take its share."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from schakel.bus import Bus
from schakel.contracts.enums import CaseState, MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import CaseId, OrgId, case_id_for, new_message_id
from schakel.contracts.policy import default_policy
from schakel.contracts.topology import (
    HUB_INSTANCES_STREAM,
    HUB_INSTANCES_SUBJECT,
    INBOUND_PARTITIONS,
    delivery_stream,
    header_case_id,
    inbound_partition,
    inbound_stream,
    inbound_subject,
    message_partition,
    org_of_inbound_subject,
)
from schakel.harness.local import local_hub
from schakel.harness.scenarios import GEM, POL, ZVH
from schakel.harness.scenarios import open_cases as scenario_cases
from schakel.harness.simulation import ScenarioRunner
from schakel.hub.audit import parse_record, read_trail
from schakel.hub.natsserver import NatsServer
from schakel.hub.service import Hub
from schakel.hub.share import Share, instance_token
from schakel.keys.crypto import SigningKey
from schakel.keys.envelope import seal
from schakel.keys.identity import PartnerIdentity
from tests.hub.conftest import World


def test_the_instances_alive_split_the_partitions_between_them() -> None:
    """Whatever the view, every partition has exactly one owner among the instances alive,
    and the shares differ by one at most (with more instances than partitions, the extra
    ones stand by)."""
    for n in range(1, 2 * INBOUND_PARTITIONS + 1):
        names = [f"hub-{i:02}" for i in range(n)]
        shares = [Share(name) for name in names]
        for share in shares:
            share.see(set(names))
        owners = [[s.token for s in shares if s.owns(p)] for p in range(INBOUND_PARTITIONS)]
        assert all(len(o) == 1 for o in owners), (n, owners)
        sizes = [len(s.partitions) for s in shares]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == INBOUND_PARTITIONS


def test_alone_an_instance_reads_every_partition_and_a_change_is_told() -> None:
    changes: list[int] = []
    share = Share("hub-b", on_change=lambda: changes.append(1))
    assert share.partitions == list(range(INBOUND_PARTITIONS))
    share.see(set())  # it always counts itself: no change
    share.see({"hub-a"})
    assert changes == [1] and share.alive == ("hub-a", "hub-b")
    assert len(share.partitions) == INBOUND_PARTITIONS // 2


def test_an_instance_name_that_is_no_subject_token_is_digested() -> None:
    for name in ("hub.a", "hub a", "hub>*", "x" * 65, "hub-ä"):
        token = instance_token(name)
        assert token.isascii() and token.replace("-", "").isalnum() and len(token) <= 64
    assert instance_token("hub-1_a") == "hub-1_a"


def test_a_case_has_one_partition_and_every_subject_one_organisation() -> None:
    """The partition is the case's alone (a known value: senders in other languages must
    compute the same); only the bare subject and the partitions' are inbound subjects."""
    assert inbound_partition("case-aaaaaaaaaaaaaaaaaaaaaaaaaa") == inbound_partition(
        "case-aaaaaaaaaaaaaaaaaaaaaaaaaa"
    )
    assert inbound_partition("case-rqajappp3tfefyznzfq4ncwmjl") == 1  # test vector
    org = OrgId("GEM.westerstad")
    for partition in (None, *range(INBOUND_PARTITIONS)):
        assert org_of_inbound_subject(inbound_subject(org, partition)) == org
    for subject in ("schakel.in.GEM.westerstad.4", "schakel.in.GEM.westerstad.00",
                    "schakel.in.GEM.westerstad.-1", "schakel.in.GEM.westerstad.1.2",
                    "schakel.out.GEM.westerstad"):  # fmt: skip
        assert org_of_inbound_subject(subject) is None
    with pytest.raises(ValueError, match="partition"):
        inbound_subject(org, INBOUND_PARTITIONS)


async def test_a_signal_goes_where_its_case_will_be_and_odd_bytes_break_nothing(
    nats_server: NatsServer, partner_identities: dict[str, PartnerIdentity], tmp_path: Path
) -> None:
    """A message that names no case (a signal) is on the partition of the case it opens, so
    the case's later messages join it; bytes that are no envelope (a test of the hub's
    defences) are published all the same. (No hub runs: the stream keeps what came.)"""
    message_id = new_message_id()
    assert message_partition(None, message_id) == inbound_partition(case_id_for(message_id))
    assert message_partition("", message_id) == message_partition(None, message_id)
    assert message_partition(None, "nïet-ascii") == 0
    ids = {o: partner_identities[o] for o in (POL, GEM)}
    async with local_hub(ids, url=nats_server.url, data_dir=tmp_path, run_hub=False) as system:
        pol = system.client(POL)
        body = example_body(MessageType.M1)
        sent = await pol.send(body, example_draft(MessageType.M1, body), [OrgId(GEM)])
        await pol.publish_raw(b'{"case_id":"\xff\xfe' + b"x" * 40, "odd-bytes-1")
        async with Bus(nats_server.url, name="check") as bus:
            stored = await bus.counts(inbound_stream(OrgId(POL)), ">")
    signal = inbound_subject(OrgId(POL), inbound_partition(case_id_for(sent)))
    assert stored.get(signal, 0) >= 1 and sum(stored.values()) == 2, stored


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        answer = condition()
        if not isinstance(answer, bool):
            answer = await answer
        if answer:
            return
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def second_hub(world: World, instance: str) -> AsyncIterator[Hub]:
    settings = world.hub.settings.model_copy(update={"instance": instance})
    async with Hub(settings, world.hub.identity) as hub:
        yield hub


def settled(*hubs: Hub) -> Callable[[], bool]:
    """Every hub sees all of them, and fetches exactly from its own partitions."""

    def check() -> bool:
        tokens = {h.share.token for h in hubs}
        return all(
            set(h.share.alive) == tokens and {p for _, p in h.fetching} == set(h.share.partitions)
            for h in hubs
        )

    return check


async def open_cases(world: World, count: int, first: int = 0) -> list[CaseId]:
    runner = ScenarioRunner(world.clients, default_policy())
    return await scenario_cases(runner, [f"c{n}" for n in range(first, first + count)])


async def cases_on_every_partition(world: World) -> list[CaseId]:
    """Open cases until every partition has at least two (each instance gets work)."""
    cases = await open_cases(world, 8)
    while min(sum(inbound_partition(c) == p for c in cases)
              for p in range(INBOUND_PARTITIONS)) < 2:  # fmt: skip
        cases += await open_cases(world, 1, first=len(cases))
    return cases


async def burst(world: World, cases: list[CaseId], count: int) -> None:
    """``count`` case-information messages from GEM to ZVH over ``cases``, published at once
    (each on its case's partition, as the SDK does)."""
    body = example_body(MessageType.M7)
    gem = world.clients[GEM]
    zvh = world.clients[ZVH].identity.public_record()
    sealed = []
    for n in range(count):
        draft = example_draft(MessageType.M7, body, case_id=cases[n % len(cases)])
        draft = draft.model_copy(update={"step": CaseState.CASUSOVERLEG})
        message_id = new_message_id()
        raw = seal(body, draft, sender=gem.identity, recipients=[zvh], message_id=message_id)
        sealed.append((message_id, raw))
    await asyncio.gather(*(gem.publish_raw(raw, message_id) for message_id, raw in sealed))


async def delivered_to_zvh(world: World) -> int:
    async with Bus(world.server.url, name="check") as bus:
        _, _, messages = await bus.state(delivery_stream(OrgId(ZVH)))
    return messages


async def test_two_instances_route_each_case_alone_and_one_takes_over_when_the_other_stops(
    world: World,
) -> None:
    """Two hub instances agree on their shares; 400 messages on 8 cases, waiting all at once,
    are routed without a single conflict on a case record (each case by its partition's
    owner; both instances work). The second stops cleanly: the first reads every partition
    at once and routes what comes next."""
    cases = await cases_on_every_partition(world)
    before = await delivered_to_zvh(world)
    first = world.hub
    assert first.router is not None
    async with second_hub(world, "hub-second") as second:
        assert second.router is not None
        await until(settled(first, second), 15)
        assert set(first.share.partitions).isdisjoint(second.share.partitions)
        done = (first.processed, second.processed)
        await burst(world, cases, 400)
        await until(lambda: first.processed + second.processed - sum(done) >= 400, 60)
        assert await delivered_to_zvh(world) == before + 400
        assert first.router.counts["conflicts"] == 0 == second.router.counts["conflicts"]
        assert first.processed > done[0] and second.processed > done[1]
        assert first.processed + second.processed - sum(done) == 400
        async with Bus(world.server.url, name="check") as bus:
            alive = await bus.counts(HUB_INSTANCES_STREAM, HUB_INSTANCES_SUBJECT + ".*")
        assert len(alive) == 2  # (subjects name instances only)
    await until(settled(first), 5)  # withdrawn at once: no wait for its "alive" to expire
    assert first.share.partitions == list(range(INBOUND_PARTITIONS))
    await burst(world, cases, 40)
    await until(lambda: _at_least(delivered_to_zvh(world), before + 440), 30)


async def _at_least(value: Awaitable[int], minimum: int) -> bool:
    return await value >= minimum


async def test_a_message_on_another_partition_than_its_case_is_still_routed_once(
    world: World,
) -> None:
    """A sender that puts a message about a case on another partition (a hostile one, or one
    of an earlier version on the bare subject) is routed all the same: the partition decides
    who routes, never whether."""
    cases = await open_cases(world, 1)
    body = example_body(MessageType.M7)
    gem = world.clients[GEM]
    zvh = world.clients[ZVH].identity.public_record()
    before = await delivered_to_zvh(world)
    sent: list[str] = []
    async with Bus(world.server.url, name="gem-raw") as bus:
        for partition in (None, *range(INBOUND_PARTITIONS)):
            draft = example_draft(MessageType.M7, body, case_id=cases[0])
            draft = draft.model_copy(update={"step": CaseState.CASUSOVERLEG})
            message_id = new_message_id()
            raw = seal(body, draft, sender=gem.identity, recipients=[zvh], message_id=message_id)
            assert header_case_id(raw) == cases[0]
            sent.append(message_id)
            await bus.publish(inbound_subject(OrgId(GEM), partition), raw,
                              {"Nats-Msg-Id": message_id})  # fmt: skip
    await until(lambda: _at_least(delivered_to_zvh(world), before + INBOUND_PARTITIONS + 1), 30)

    async def routed() -> Counter[str]:
        async with Bus(world.server.url, name="check") as bus:
            lines = [line async for _, raw in read_trail(bus) for line in raw.split(b"\n")]
        records = [r for r in map(parse_record, lines) if r is not None]
        return Counter(str(r.message_id) for r in records if r.event == "routed")

    async def all_audited() -> bool:
        return set(sent) <= set(await routed())

    await until(all_audited, 30)
    counts = await routed()
    assert [counts[m] for m in sent] == [1] * (INBOUND_PARTITIONS + 1)
    assert await delivered_to_zvh(world) == before + INBOUND_PARTITIONS + 1


async def test_an_instance_whose_routing_is_stuck_gives_its_share_away(
    nats_server: NatsServer,
    partner_identities: dict[str, PartnerIdentity],
    hub_identity: PartnerIdentity,
    authority: SigningKey,
    tmp_path: Path,
) -> None:
    """An instance that still runs but whose batches never finish (a hung dependency, a bug)
    stops saying it is alive, so the other takes its partitions, and what it held comes back
    after the ack wait: every message is delivered, by the healthy instance."""
    async with local_hub(
        partner_identities, url=nats_server.url, data_dir=tmp_path, authority=authority,
        hub_identity=hub_identity, ack_wait=2.0,
    ) as system:  # fmt: skip
        assert system.hub is not None
        world = World(nats_server, system.hub, partner_identities, system.clients, tmp_path,
                      authority)  # fmt: skip
        cases = await cases_on_every_partition(world)
        before = await delivered_to_zvh(world)
        first = world.hub
        async with second_hub(world, "hub-stuck") as second:
            assert second.router is not None
            await until(settled(first, second), 15)
            released = asyncio.Event()

            async def hangs(items: object) -> list[Exception]:
                await released.wait()
                return [RuntimeError("released")] * len(items)  # type: ignore[arg-type]

            second.stuck_after = 1.0
            second.router.handle_batch = hangs  # type: ignore[method-assign,assignment]
            try:
                await burst(world, cases, 80)
                await until(lambda: first.share.partitions == list(range(INBOUND_PARTITIONS)), 20)
                await until(lambda: _at_least(delivered_to_zvh(world), before + 80), 30)
            finally:
                released.set()
