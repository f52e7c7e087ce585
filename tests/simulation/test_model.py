"""The expert model: seeded, varied between experts, and shaped as documented."""

import numpy as np

from app.simulation import model, world
from app.simulation.model import Decision, Scene, SceneObject, ShownObject
from app.simulation.presets import PAPER

BOX = (10.0, 10.0, 60.0, 60.0)


def _scene(difficulty: float = 0.0, label: int = 2, count: int = 200) -> Scene:
    truth = tuple(
        SceneObject(
            (10.0 + 70 * (i % 20), 10.0 + 70 * (i // 20), 60.0 + 70 * (i % 20), 60.0 + 70 * (i // 20)),
            label,
            difficulty,
        )
        for i in range(count)
    )
    return Scene(key=0, width=1500, height=800, truth=truth)


def test_same_seed_same_work_and_expert_i_does_not_depend_on_the_population_size() -> None:
    first = model.population(PAPER["grade"], 3, seed=4)
    again = model.population(PAPER["grade"], 8, seed=4)
    assert first == again[:3]
    scene = _scene(0.5)
    assert model.unaided(first[1], scene, 5) == model.unaided(again[1], scene, 5)
    other = model.population(PAPER["grade"], 3, seed=5)
    assert model.unaided(other[1], scene, 5) != model.unaided(first[1], scene, 5)


def test_experts_differ() -> None:
    experts = model.population(PAPER["classify"], 10, seed=0)
    assert len({round(expert.skill, 6) for expert in experts}) == 10
    assert len({round(expert.speed, 6) for expert in experts}) == 10


def test_harder_objects_are_found_less_often() -> None:
    expert = model.population(PAPER["detect"], 1, seed=0)[0]
    easy = len(model.unaided(expert, _scene(0.0, label=0), 1).created)
    hard = len(model.unaided(expert, _scene(1.0, label=0), 1).created)
    assert easy > hard


def test_grades_are_confused_with_neighbours_more_than_with_distant_grades() -> None:
    expert = model.population(PAPER["grade"], 1, seed=0)[0]
    labels = np.array([c.label for c in model.unaided(expert, _scene(0.9, label=2, count=400), 5).created])
    wrong = labels[labels != 2]
    assert len(wrong) > 20
    assert np.count_nonzero(np.abs(wrong - 2) == 1) > 3 * np.count_nonzero(np.abs(wrong - 2) == 2)


def test_aided_review_classifies_each_shown_suggestion() -> None:
    scene = Scene(0, 500, 500, (SceneObject(BOX, 1, 0.1), SceneObject((100.0, 100.0, 150.0, 150.0), 0, 0.1)))
    shown = [
        ShownObject(BOX, 1),  # correct
        ShownObject((12.0, 12.0, 62.0, 62.0), 1),  # duplicate of the first
        ShownObject((100.0, 100.0, 150.0, 150.0), 3),  # wrong label
        ShownObject((300.0, 300.0, 350.0, 350.0), 0),  # nothing there
    ]
    seen = [kind for kind, _ in model.classify_shown(scene, shown)]
    assert seen == ["correct", "duplicate", "wrong_label", "nothing"]
    experts = model.population(PAPER["classify"], 40, seed=1)
    works = [model.aided(expert, scene, shown, 5) for expert in experts]
    assert all(len(work.decisions) == len(shown) for work in works)
    deleted_fake = sum(work.decisions[3][0] == Decision.delete for work in works)
    relabelled = sum(work.decisions[2][0] == Decision.relabel and work.decisions[2][1] == 0 for work in works)
    assert deleted_fake > 20
    assert relabelled > 20


def test_simulated_aided_mode_beats_unaided_on_the_demo_phantoms() -> None:
    task = world.sim_task("classify", 0, 15)
    result = world.run(task, model.population(PAPER["classify"], 4, seed=0, task_key=task.task_key))
    metrics = world.evaluate(result)
    unaided, aided = metrics.modes["unaided"].summary, metrics.modes["aided"].summary
    assert aided.concordance.mean is not None
    assert unaided.concordance.mean is not None
    assert aided.concordance.mean > unaided.concordance.mean
    assert aided.seconds_per_image.mean is not None
    assert unaided.seconds_per_image.mean is not None
    assert aided.seconds_per_image.mean < unaided.seconds_per_image.mean
