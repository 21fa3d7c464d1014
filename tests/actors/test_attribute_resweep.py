"""An operator's trait attribute over REST in the Ray runtime against the real Placement: it replaces
the driver's trait on the RP, and once deleted the driver's own value is back at once (the front door
asks the host's agent to report again), not only at the driver's next change."""

from __future__ import annotations

import re

import pytest
from runtime_helpers import fpga_rest_runtime, until
from sqlmodel import select

from rayborg.store.tables import Attribute, Deployable

pytestmark = [pytest.mark.xdist_group("ray"), pytest.mark.slow]


@pytest.fixture
async def env(ray_cluster, placement_server, nova, tmp_path):
    async with fpga_rest_runtime(placement_server, nova, tmp_path, nudge_placement_sync=True) as env:
        yield env


def driver_trait(store) -> tuple[str, str, str, str]:
    """(deployable uuid, its RP, a driver trait key, its value) of some deployable."""
    rows = store.query(lambda s: list(s.exec(
        select(Deployable.uuid, Deployable.rp_uuid, Attribute.key, Attribute.value)
        .join(Attribute, Attribute.deployable_id == Deployable.id).order_by(Deployable.name, Attribute.key))))
    return next(r for r in rows if re.fullmatch(r"trait\d+", r[2]))


async def test_deleting_an_operator_trait_brings_the_drivers_back_at_once(env):
    client, store, placement = env["client"], env["store"], env["placement"]
    dep, rp, key, driver_value = driver_trait(store)

    def traits() -> set[str]:
        _, listed = placement.get_traits(rp)
        return set(listed)

    assert driver_value in traits()
    resp = await client.put(f"/v2/deployable/{dep}/attribute/{key}", json={"value": "CUSTOM_OPERATOR_SET"})
    assert resp.status == 204, await resp.text()
    await until(lambda: "CUSTOM_OPERATOR_SET" in traits() and driver_value not in traits(),
                "the operator's trait replacing the driver's on the RP")

    resp = await client.delete(f"/v2/deployable/{dep}/attribute/{key}")
    assert resp.status == 204, await resp.text()
    await until(lambda: driver_value in traits() and "CUSTOM_OPERATOR_SET" not in traits(),
                "the driver's trait back on the RP")
    resp = await client.get(f"/v2/deployable/{dep}/attribute/{key}")
    assert resp.status == 200 and (await resp.json())["attribute"]["value"] == driver_value
