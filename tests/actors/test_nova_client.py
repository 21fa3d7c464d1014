"""The Nova notifier against a real HTTP server that records the calls."""

import pytest

from nova_recorder import NovaRecorder
from rayborg.actors.nova_client import BoundEvent, NovaClient, NovaError


@pytest.fixture
def nova():
    rec = NovaRecorder().start()
    yield rec
    rec.stop()


def test_one_call_per_instance_with_one_event_per_arq(nova):
    client = NovaClient(nova.url, token="svc")
    client.send_bound_events("inst-1", [BoundEvent("inst-1", "arq-a", "Bound"),
                                        BoundEvent("inst-1", "arq-b", "BindFailed")])
    (call,) = nova.calls
    assert call["path"] == "/os-server-external-events"
    assert call["headers"]["OpenStack-API-Version"] == "compute 2.82"
    assert call["headers"]["X-Auth-Token"] == "svc"
    assert call["body"]["events"] == [
        {"name": "accelerator-request-bound", "server_uuid": "inst-1", "tag": "arq-a", "status": "completed"},
        {"name": "accelerator-request-bound", "server_uuid": "inst-1", "tag": "arq-b", "status": "failed"}]


def test_failure_raises_so_the_caller_retries(nova):
    nova.fail_next = 1
    client = NovaClient(nova.url)
    with pytest.raises(NovaError, match="503"):
        client.send_bound_events("inst-1", [BoundEvent("inst-1", "arq-a", "Bound")])
    client.send_bound_events("inst-1", [BoundEvent("inst-1", "arq-a", "Bound")])
    assert [e["tag"] for e in nova.delivered_events()] == ["arq-a"]


def test_unreachable_nova_is_a_nova_error():
    client = NovaClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(NovaError, match="unreachable"):
        client.send_bound_events("inst-1", [BoundEvent("inst-1", "arq-a", "Bound")])


def test_no_such_instance_is_dropped_not_retried(nova):
    """Nova's 404 for an instance it does not know (deleted, or the consumer of a standalone bind):
    nobody waits for the event, so it counts as delivered; any other 404 is still an error."""
    client = NovaClient(nova.url)
    nova.fail_status, nova.fail_next = 404, 1
    nova.fail_body = {"itemNotFound": {"message": "No instances found for any event", "code": 404}}
    client.send_bound_events("inst-1", [BoundEvent("inst-1", "arq-a", "Bound")])
    nova.fail_next, nova.fail_body = 1, None
    with pytest.raises(NovaError, match="404"):
        client.send_bound_events("inst-1", [BoundEvent("inst-1", "arq-a", "Bound")])
