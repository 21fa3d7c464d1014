"""The Nova notifier against a real HTTP server that records the calls."""

import pytest

from nova_recorder import NovaRecorder
from rayborg.actors.nova_client import BoundEvent, NovaClient, NovaError


@pytest.fixture
def nova():
    rec = NovaRecorder().start()
    yield rec
    rec.stop()


def test_one_call_carries_one_event_per_arq_of_every_instance(nova):
    client = NovaClient(nova.url, token="svc")
    refused = client.send_bound_events([BoundEvent("inst-1", "arq-a", "Bound"),
                                        BoundEvent("inst-1", "arq-b", "BindFailed"),
                                        BoundEvent("inst-2", "arq-c", "Bound")])
    assert refused == set()
    (call,) = nova.calls
    assert call["path"] == "/os-server-external-events"
    assert call["headers"]["OpenStack-API-Version"] == "compute 2.82"
    assert call["headers"]["X-Auth-Token"] == "svc"
    assert call["body"]["events"] == [
        {"name": "accelerator-request-bound", "server_uuid": "inst-1", "tag": "arq-a", "status": "completed"},
        {"name": "accelerator-request-bound", "server_uuid": "inst-1", "tag": "arq-b", "status": "failed"},
        {"name": "accelerator-request-bound", "server_uuid": "inst-2", "tag": "arq-c", "status": "completed"}]


def test_failure_raises_so_the_caller_retries(nova):
    nova.fail_next = 1
    client = NovaClient(nova.url)
    with pytest.raises(NovaError, match="503"):
        client.send_bound_events([BoundEvent("inst-1", "arq-a", "Bound")])
    client.send_bound_events([BoundEvent("inst-1", "arq-a", "Bound")])
    assert [e["tag"] for e in nova.delivered_events()] == ["arq-a"]


def test_unreachable_nova_is_a_nova_error():
    client = NovaClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(NovaError, match="unreachable"):
        client.send_bound_events([BoundEvent("inst-1", "arq-a", "Bound")])


def test_no_such_instance_is_dropped_not_retried(nova):
    """Nova's 404 for instances it does not know (deleted, or the consumers of standalone binds):
    nobody waits for the events, so they count as delivered; any other 404 is still an error."""
    client = NovaClient(nova.url)
    nova.fail_status, nova.fail_next = 404, 1
    nova.fail_body = {"itemNotFound": {"message": "No instances found for any event", "code": 404}}
    assert client.send_bound_events([BoundEvent("inst-1", "arq-a", "Bound")]) == set()
    nova.fail_next, nova.fail_body = 1, None
    with pytest.raises(NovaError, match="404"):
        client.send_bound_events([BoundEvent("inst-1", "arq-a", "Bound")])


def test_multi_status_retries_only_the_instances_nova_refused(nova):
    """A 207: per event, 200 is taken, 404 (no such instance) and 422 (no host yet, Nova checks the
    ARQs itself) are settled; any other code leaves that instance's events to be sent again."""
    nova.event_codes = {"gone": 404, "hostless": 422, "busy": 409}
    client = NovaClient(nova.url)
    refused = client.send_bound_events([BoundEvent(i, f"arq-{i}", "Bound") for i in ("ok", "gone", "hostless", "busy")])
    assert refused == {"busy"}
    assert [e["tag"] for e in nova.delivered_events()] == ["arq-ok"]


def test_multi_status_refusing_every_instance_is_an_error(nova):
    nova.event_codes = {"inst-1": 400, "inst-2": 500}
    client = NovaClient(nova.url)
    with pytest.raises(NovaError, match="refused"):
        client.send_bound_events([BoundEvent("inst-1", "arq-a", "Bound"), BoundEvent("inst-2", "arq-b", "Bound")])
