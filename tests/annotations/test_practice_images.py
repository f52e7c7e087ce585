"""Training mode works on practice images only: an expert never sees the reference of an image that they
annotate in another mode, through any route (API, workspace pages, reference overlay, image lists)."""

import re

from httpx import AsyncClient

from tests.conftest import ClientFactory
from tests.factories import StudySetup, make_study, make_user
from tests.pages.test_pages import browser_client

BOX = {"label": "tumor", "x1": 10, "y1": 10, "x2": 50, "y2": 50}


async def _study_with_reference(app: object, client_for: ClientFactory) -> StudySetup:
    setup = await make_study(
        app, experts=("alice",), modes=("training", "unaided", "aided"), image_count=2, practice_count=2
    )
    admin = await client_for("admin")
    truth = [{**BOX, "image": image.name} for image in setup.images + setup.practice]
    response = await admin.post(f"/api/v1/tasks/{setup.task.id}/ground-truth", json={"objects": truth})
    assert response.status_code == 201, response.text
    return setup


async def _assignments(client: AsyncClient) -> dict[str, int]:
    return {item["mode"]: item["id"] for item in (await client.get("/api/v1/assignments")).json()}


async def test_training_api_refuses_study_images_and_study_modes_refuse_practice_images(
    app: object, client_for: ClientFactory
) -> None:
    setup = await _study_with_reference(app, client_for)
    alice = await client_for("alice")
    study_image, practice_image = setup.images[0].id, setup.practice[0].id
    for image, modes in ((study_image, ("training",)), (practice_image, ("unaided", "aided"))):
        for mode in modes:
            base = f"/api/v1/images/{image}"
            assert (await alice.get(f"{base}/annotations?mode={mode}")).status_code == 404
            assert (await alice.post(f"{base}/annotations?mode={mode}", json=BOX)).status_code == 404
            assert (await alice.post(f"{base}/annotations/bulk?mode={mode}", json=[BOX])).status_code == 404
            assert (await alice.get(f"{base}/events?mode={mode}")).status_code == 404
            assert (await alice.post(f"{base}/visits?mode={mode}")).status_code == 404
            assert (await alice.post(f"{base}/done?mode={mode}")).status_code == 404
    assert (
        await alice.post(f"/api/v1/images/{practice_image}/annotations?mode=training", json=BOX)
    ).status_code == 201
    assert (
        await alice.post(f"/api/v1/images/{study_image}/annotations?mode=unaided", json=BOX)
    ).status_code == 201
    totals = {item["mode"]: item["images_total"] for item in (await alice.get("/api/v1/assignments")).json()}
    assert totals == {"training": 2, "unaided": 2, "aided": 2}


async def test_reference_overlay_never_shows_an_image_annotated_in_another_mode(
    app: object, client_for: ClientFactory
) -> None:
    setup = await _study_with_reference(app, client_for)
    alice_api = await client_for("alice")
    assignments = await _assignments(alice_api)
    study_image, practice_image = setup.images[0].id, setup.practice[0].id
    assert (await alice_api.post(f"/api/v1/images/{study_image}/done?mode=unaided")).status_code == 200
    assert (await alice_api.post(f"/api/v1/images/{practice_image}/done?mode=training")).status_code == 200
    client, _ = await browser_client(app, "alice")
    async with client:
        training = f"/work/{assignments['training']}/images"
        refused = [
            await client.get(f"{training}/{study_image}"),
            await client.get(f"{training}/{study_image}/reference"),
            await client.get(f"/work/{assignments['unaided']}/images/{practice_image}"),
            await client.get(f"/work/{assignments['unaided']}/images/{study_image}/reference"),
            await client.get(f"/work/{assignments['aided']}/images/{practice_image}/reference"),
        ]
        shown = await client.get(f"{training}/{practice_image}/reference", headers={"HX-Request": "true"})
    assert [response.status_code for response in refused] == [404, 404, 404, 403, 404]
    assert shown.status_code == 200
    assert shown.text.count('class="ref missed"') == 1


async def test_workspace_navigation_and_image_lists_keep_practice_and_study_images_apart(
    app: object, client_for: ClientFactory
) -> None:
    setup = await _study_with_reference(app, client_for)
    await make_user(app, "bob")
    admin = await client_for("admin")
    bob_assignment = await admin.post(
        "/api/v1/assignments", json={"task_id": setup.task.id, "expert": "bob", "mode": "unaided"}
    )
    assert bob_assignment.status_code == 201, bob_assignment.text
    study_names = {image.name for image in setup.images}
    practice_names = {image.name for image in setup.practice}
    alice = await client_for("alice")
    bob = await client_for("bob")
    listed = f"/api/v1/tasks/{setup.task.id}/images"
    assert {item["name"] for item in (await bob.get(listed)).json()} == study_names
    assert {item["name"] for item in (await bob.get(f"{listed}?purpose=practice")).json()} == set()
    assert {item["name"] for item in (await alice.get(f"{listed}?purpose=practice")).json()} == practice_names
    purposes = {item["name"]: item["purpose"] for item in (await admin.get(listed)).json()}
    assert purposes == {**dict.fromkeys(study_names, "study"), **dict.fromkeys(practice_names, "practice")}
    practice_image = setup.practice[0].id
    for route in ("", "/thumbnail", "/tiles/0/0/0"):
        assert (await bob.get(f"/api/v1/images/{practice_image}{route}")).status_code == 404
        assert (await alice.get(f"/api/v1/images/{practice_image}{route}")).status_code == 200

    assignments = await _assignments(alice)
    client, _ = await browser_client(app, "alice")
    async with client:
        pages = {}
        for mode in ("training", "unaided"):
            first = await client.get(f"/work/{assignments[mode]}", follow_redirects=True)
            assert first.status_code == 200
            pages[mode] = first.text
        training = f"/work/{assignments['training']}/images"
        first_practice, last_practice = (image.id for image in setup.practice)
        last_study = f"/work/{assignments['unaided']}/images/{setup.images[-1].id}"
        next_links = [
            re.findall(r'id="next-link" href="([^"]+)"', (await client.get(url)).text)
            for url in (f"{training}/{first_practice}", f"{training}/{last_practice}", last_study)
        ]
    assert next_links == [[f"{training}/{last_practice}"], [], []]  # N never leaves the mode's images
    for mode, own, other in (
        ("training", practice_names, study_names),
        ("unaided", study_names, practice_names),
    ):
        sidebar = set(re.findall(r'href="/work/\d+/images/\d+"[^>]*>([^<]+)</a>', pages[mode]))
        assert sidebar == own
        assert not other & set(re.findall(r"(?:img|practice)\d+\.png", pages[mode]))


async def test_practice_images_and_their_reference_do_not_count_in_study_metrics(
    app: object, client_for: ClientFactory
) -> None:
    setup = await make_study(
        app, experts=("alice",), modes=("training", "unaided"), image_count=1, practice_count=1
    )
    admin = await client_for("admin")
    study_image, practice_image = setup.images[0], setup.practice[0]
    truth = [
        {**BOX, "image": study_image.name},
        {**BOX, "label": "normal", "image": practice_image.name},
    ]
    response = await admin.post(f"/api/v1/tasks/{setup.task.id}/ground-truth", json={"objects": truth})
    assert response.status_code == 201
    alice = await client_for("alice")
    for image, mode in ((study_image, "unaided"), (practice_image, "training")):
        assert (
            await alice.post(f"/api/v1/images/{image.id}/annotations?mode={mode}", json=BOX)
        ).status_code == 201
        assert (await alice.post(f"/api/v1/images/{image.id}/done?mode={mode}")).status_code == 200
    body = (await admin.get(f"/api/v1/studies/{setup.study.id}/metrics")).json()
    task = body["tasks"][setup.task.name]
    assert set(task["modes"]) == {"unaided"}
    # the practice image's "normal" reference object, missed in the study, would halve the mean AP
    assert task["modes"]["unaided"]["experts"]["alice"]["concordance"] == 1.0
    exported = (await admin.get(f"/api/v1/tasks/{setup.task.id}/ground-truth/export?format=csv")).text
    assert study_image.name in exported
    assert practice_image.name not in exported
