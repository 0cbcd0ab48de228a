"""AlertHub: fan-out to WatchAlerts subscribers without ever blocking the publisher."""

from __future__ import annotations

import asyncio

import pytest
from sentinel.orchestrator.alert_hub import AlertHub, SubscriberTooSlow

from sentinel.v1 import orchestrator_pb2 as pb


def alert(sensor: str, n: int = 0) -> pb.Alert:
    return pb.Alert(alert_id=f"{sensor}-{n}", sensor_id=sensor, state=pb.ALERT_STATE_OPEN)


def is_ordered_subsequence(got: list, sent: list) -> bool:
    remaining = iter(sent)
    return all(any(item == candidate for candidate in remaining) for item in got)


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def start(hub: AlertHub, prefix: str = "", gate: asyncio.Event | None = None):
    """Consume a subscription in a task; returns (task, received list)."""
    received: list[pb.Alert] = []

    async def consume():
        async for item in hub.subscribe(prefix):
            received.append(item)
            if gate is not None:
                await gate.wait()
        return received

    return asyncio.create_task(consume()), received


async def test_every_subscriber_gets_every_alert_in_order():
    hub = AlertHub()
    (t1, _), (t2, _) = start(hub), start(hub)
    await settle()
    assert hub.subscribers == 2
    sent = [alert("s", n) for n in range(10)]
    for a in sent:
        hub.publish(a)
    await settle()
    hub.close()
    assert await asyncio.wait_for(t1, 1) == sent
    assert await asyncio.wait_for(t2, 1) == sent
    assert hub.subscribers == 0


async def test_prefix_filters_by_sensor_id():
    hub = AlertHub()
    (boilers, got_boilers), (everything, got_all) = start(hub, "boiler-"), start(hub, "")
    await settle()
    for sensor in ["boiler-1", "pump-1", "boiler-2", "boile", "xboiler-3"]:
        hub.publish(alert(sensor))
    await settle()
    hub.close()
    await asyncio.wait_for(asyncio.gather(boilers, everything), 1)
    assert [a.sensor_id for a in got_boilers] == ["boiler-1", "boiler-2"]
    assert len(got_all) == 5


async def test_publish_without_subscribers_is_a_no_op():
    hub = AlertHub()
    hub.publish(alert("s"))
    assert hub.subscribers == 0


async def test_slow_subscriber_is_ended_while_others_continue():
    drops = []
    hub = AlertHub(queue_size=3, on_drop=lambda: drops.append(1))
    gate = asyncio.Event()
    slow, got_slow = start(hub, gate=gate)
    fast, got_fast = start(hub)
    await settle()
    sent = [alert("s", n) for n in range(12)]
    for a in sent:
        hub.publish(a)  # never blocks, even with a stuck subscriber
        await settle()
    assert drops == [1]
    assert hub.subscribers == 1
    gate.set()
    with pytest.raises(SubscriberTooSlow):
        await asyncio.wait_for(slow, 1)
    # The slow one got some alerts, in publishing order (the hub makes room for the error by
    # dropping the oldest queued alert), then the error; nothing published after it.
    assert got_slow[0] == sent[0]
    assert is_ordered_subsequence(got_slow, sent)
    assert 1 <= len(got_slow) <= 4
    hub.publish(alert("s", 99))
    await settle()
    hub.close()
    assert await asyncio.wait_for(fast, 1) == [*sent, alert("s", 99)]


async def test_close_ends_subscriptions_even_with_a_full_queue():
    hub = AlertHub(queue_size=2)
    gate = asyncio.Event()
    stuck, got = start(hub, gate=gate)
    idle, got_idle = start(hub)
    await settle()
    hub.publish(alert("s", 0))
    await settle()
    hub.publish(alert("s", 1))
    hub.publish(alert("s", 2))  # stuck subscriber's queue is now full
    hub.close()
    assert hub.subscribers == 0
    gate.set()
    await asyncio.wait_for(asyncio.gather(stuck, idle), 1)  # both end cleanly
    assert got[0] == alert("s", 0)
    # Making room for the end marker in a full queue may drop the oldest queued alert.
    assert got_idle[0] == alert("s", 0)
    assert got_idle[-1] == alert("s", 2)
    assert is_ordered_subsequence(got_idle, [alert("s", n) for n in range(3)])


async def test_cancelled_subscriber_unregisters():
    hub = AlertHub()
    task, _ = start(hub)
    await settle()
    assert hub.subscribers == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hub.subscribers == 0
    hub.publish(alert("s"))  # no error publishing after a subscriber left


async def test_closing_the_iterator_unregisters():
    hub = AlertHub()
    subscription = hub.subscribe()
    pending = asyncio.ensure_future(subscription.__anext__())
    await settle()
    hub.publish(alert("s", 1))
    assert await asyncio.wait_for(pending, 1) == alert("s", 1)
    await subscription.aclose()
    assert hub.subscribers == 0
