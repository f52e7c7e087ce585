"""The workspace is authorised in one query on the usual path; every other case keeps its precise answer."""

from tests.conftest import ClientFactory
from tests.factories import make_study

BOX = {"label": "tumor", "x1": 1, "y1": 1, "x2": 20, "y2": 20}


async def test_edits_are_refused_with_the_precise_status(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app, experts=("alice",), modes=("unaided", "aided"))
    await make_study(app, experts=("carol", "dave", "erin"))
    alice, carol = await client_for("alice"), await client_for("carol")
    image = setup.images[0].id

    def url(mode: str, image_id: int = image) -> str:
        return f"/api/v1/images/{image_id}/annotations?mode={mode}"

    assert (await alice.post(url("unaided"), json=BOX)).status_code == 201
    assert (await alice.post(url("unaided"), json=BOX)).status_code == 201  # the one-query path
    assert (await alice.post(url("aided"), json=BOX)).status_code == 403  # washout: unaided not finished
    assert (await alice.post(url("training"), json=BOX)).status_code == 404  # no such assignment
    assert (await alice.post(url("sideways"), json=BOX)).status_code == 422
    assert (await alice.post(url("unaided", 10**6), json=BOX)).status_code == 404
    assert (await carol.post(url("unaided"), json=BOX)).status_code == 404  # not her task
    assert (await carol.get(url("unaided"))).status_code == 404
    objects = (await alice.get(url("unaided"))).json()
    assert len(objects) == 2
