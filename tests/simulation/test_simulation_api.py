"""Starting a simulation: once per study, never on a study with real work; the time scale counts only for
the simulated experts' visits."""

import asyncio

from tests.conftest import ClientFactory
from tests.factories import make_study


async def test_time_scale_applies_to_simulated_experts_only(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app, experts=("alice",))
    admin, alice = await client_for("admin"), await client_for("alice")
    started = await admin.post(
        f"/api/v1/studies/{setup.study.id}/simulation", json={"experts": 1, "speedup": 1000}
    )
    assert started.status_code == 201, started.text
    (simulated,) = started.json()["experts"]
    study = (await admin.get(f"/api/v1/studies/{setup.study.id}")).json()
    assert study["simulated"] is True
    assert study["simulation_time_scale"] == 1000
    again = await admin.post(f"/api/v1/studies/{setup.study.id}/simulation", json={"experts": 1})
    assert again.status_code == 409

    image = setup.images[0].id
    sim = await client_for(simulated["name"])
    seconds = {}
    for name, client in (("alice", alice), ("simulated", sim)):
        visit = (await client.post(f"/api/v1/images/{image}/visits?mode=unaided")).json()
        await asyncio.sleep(0.05)
        closed = await client.post(f"/api/v1/visits/{visit['id']}/close", json={"active": True})
        seconds[name] = closed.json()["active_seconds"]
    assert seconds["alice"] < 5  # a person's seconds are real ones
    assert seconds["simulated"] >= 0.05 * 1000 * 0.9  # the simulated expert's are scaled


async def test_a_study_with_real_work_cannot_become_simulated(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app, experts=("alice",))
    alice, admin = await client_for("alice"), await client_for("admin")
    assert (await alice.post(f"/api/v1/images/{setup.images[0].id}/visits?mode=unaided")).status_code == 201
    refused = await admin.post(f"/api/v1/studies/{setup.study.id}/simulation", json={"experts": 2})
    assert refused.status_code == 409
    assert (await admin.get(f"/api/v1/studies/{setup.study.id}")).json()["simulated"] is False
    unknown = await admin.post(f"/api/v1/studies/{setup.study.id}/simulation", json={"preset": "nope"})
    assert unknown.status_code in (409, 422)
