"""The tile route authorises in one query with the rule of every image route (studies.get_image)."""

from app.models import Assignment
from tests.conftest import ClientFactory
from tests.factories import _maker, make_study, make_user


async def test_tiles_follow_the_image_visibility_rule(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app, experts=("alice",), modes=("training",), image_count=1, practice_count=1)
    await make_user(app, "carol")
    dave_id = (await make_user(app, "dave")).id
    async with _maker(app)() as session, session.begin():
        session.add(Assignment(task_id=setup.task.id, expert_id=dave_id, mode="aided"))
    admin, alice, carol, dave = [await client_for(name) for name in ("admin", "alice", "carol", "dave")]
    study_tile = f"/api/v1/images/{setup.images[0].id}/tiles/0/0/0"
    practice_tile = f"/api/v1/images/{setup.practice[0].id}/tiles/0/0/0"
    expected = {
        (admin, study_tile): 200,
        (admin, practice_tile): 200,
        (alice, study_tile): 404,  # training works on practice images only
        (alice, practice_tile): 200,
        (carol, study_tile): 404,  # no assignment on the task
        (dave, study_tile): 200,
        (dave, practice_tile): 404,
    }
    for (client, url), status in expected.items():
        assert (await client.get(url)).status_code == status, url
    assert (await admin.get("/api/v1/images/999999/tiles/0/0/0")).status_code == 404
