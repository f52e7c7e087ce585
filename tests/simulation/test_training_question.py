"""The training question (validation accuracy vs. simulated experts per mode): labels from votes, the answer,
the whole question on a tiny configuration (structure, determinism), the CLI."""

import json
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from app.cli import main
from app.jobs.registry import job_kind
from app.simulation import training_question as question
from app.simulation.schemas import TrainingQuestionParams
from app.training.service import Samples

TINY: dict[str, Any] = {
    "experts": [1, 2],
    "losses": ["votes", "bce"],
    "repeats": 1,
    "epochs_unfrozen": 1,
    "patch_size": 16,
    "batch_size": 16,
    "background_per_image": 2,
    "device": "cpu",
    "cpu_threads": 1,
}
SIZE = (400, 400)
A, A2, A3 = (100.0, 100.0, 150.0, 150.0), (102.0, 101.0, 152.0, 151.0), (99.0, 100.0, 149.0, 150.0)
B, B2 = (250.0, 250.0, 300.0, 300.0), (251.0, 252.0, 301.0, 302.0)
C, D, E = (300.0, 50.0, 350.0, 100.0), (50.0, 300.0, 100.0, 350.0), (300.0, 300.0, 350.0, 350.0)


def _located(*rows: tuple[int, tuple[float, float, float, float]]) -> question.Located:
    return question.Located.of(list(rows))


# Field 0 trains, field 1 is held out. Experts: 0 marks A and B, 1 marks A (shifted) and C, 2 marks A and B.
EXPERTS = [_located((0, A), (0, B)), _located((0, A2), (0, C)), _located((0, A3), (0, B2))]
CANDIDATES = _located((0, A), (0, B), (0, C), (0, D), (1, A), (1, E))
TRUTH = _located((0, A), (0, B), (1, A))


def _samples(count: int) -> tuple[Samples, Samples]:
    params = TrainingQuestionParams(background_per_image=0)
    sizes = np.array([SIZE, SIZE], dtype=np.int64)
    held_out = np.array([False, True])
    return question.vote_samples(EXPERTS[:count], CANDIDATES, TRUTH, sizes, held_out, params)


def _centre(box: tuple[float, float, float, float]) -> list[float]:
    return [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]


def test_votes_label_the_training_cells_exactly() -> None:
    train, validation = _samples(3)
    # cells in keeper order: A (3 experts), B (2: expert 0 and 2), C (1); D is a candidate nobody marked
    assert train.centres.tolist() == [_centre(A), _centre(B), _centre(C), _centre(D)]
    assert train.positive.tolist() == [True, True, True, False]
    assert train.votes.tolist() == [3, 2, 1, 0]
    assert train.image_index.tolist() == [0, 0, 0, 0]
    # validation is the truth of the held-out field, whatever the experts did: A positive, E negative
    assert validation.centres.tolist() == [_centre(A), _centre(E)]
    assert validation.positive.tolist() == [True, False]


def test_one_expert_labels_only_its_own_cells_and_the_rest_are_negatives() -> None:
    train, validation = _samples(1)
    assert train.centres.tolist() == [_centre(A), _centre(B), _centre(C), _centre(D)]
    assert train.positive.tolist() == [True, True, False, False]
    assert train.votes.tolist() == [1, 1, 0, 0]
    assert validation.positive.tolist() == [True, False]
    two, _ = _samples(2)
    assert two.positive.tolist() == [True, True, True, False]
    assert two.votes.tolist() == [2, 1, 1, 0]  # A by both, B by expert 0 alone, C by expert 1 alone
    assert two.centres.tolist() == [_centre(A), _centre(B), _centre(C), _centre(D)]


def test_votes_loss_weights_of_the_voted_cells() -> None:
    pytest.importorskip("torch")
    from worker.training.votes_loss import sample_weights

    train, _ = _samples(3)
    weights = sample_weights(train.votes, train.positive, "paper", 3)
    assert weights.tolist() == [1.0, 0.5, 0.0, 1.0]  # (v − 1) / (3 − 1); negatives weigh 1


def test_label_quality_counts_positives_on_true_figures() -> None:
    train, _ = _samples(3)
    region = question.Region(
        image=np.full((400, 800, 3), 255, dtype=np.uint8),
        windows=[(0, 0, 400, 400), (400, 0, 400, 400)],
        experts={},
        candidates=CANDIDATES,
        truth=TRUTH,
        sizes=np.array([SIZE, SIZE], dtype=np.int64),
        held_out=np.array([False, True]),
    )
    precision, recall = question.label_quality(region, train)
    assert precision == pytest.approx(2 / 3) and recall == 1.0  # C is no figure; A and B are labelled
    one, _ = _samples(1)
    assert question.label_quality(region, one) == (1.0, 1.0)
    patches = question.patches(region, train, 16)
    assert patches.shape == (4, 16, 16, 3) and patches.dtype == np.uint8


def test_more_experts_label_more_of_the_true_figures() -> None:
    params = TrainingQuestionParams(experts=[1, 2, 3, 5], background_per_image=2)
    region = question.region(params, 0)
    for mode in question.MODES:
        recalls = [
            question.label_quality(region, question.region_samples(region, mode, k, params)[0])[1]
            for k in params.experts
        ]
        assert all(0.0 <= value <= 1.0 for value in recalls)
        assert recalls == sorted(recalls), f"{mode}: the union of more experts' cells lost figures: {recalls}"
    aided = question.label_quality(region, question.region_samples(region, "aided", 1, params)[0])
    unaided = question.label_quality(region, question.region_samples(region, "unaided", 1, params)[0])
    assert aided[0] > unaided[0]  # aided experts start from the detector: fewer look-alikes marked


def _rows(unaided: list[float], aided_one: float) -> list[dict[str, Any]]:
    rows = [
        {"loss": "votes", "mode": "unaided", "experts": k, "accuracy_mean": v}
        for k, v in enumerate(unaided, 1)
    ]
    return [*rows, {"loss": "votes", "mode": "aided", "experts": 1, "accuracy_mean": aided_one}]


def test_the_answer_is_the_smallest_k_that_reaches_one_aided_expert() -> None:
    assert question.answer(_rows([0.7, 0.8, 0.9], 0.8), "votes")["unaided_experts"] == 2  # equal counts
    found = question.answer(_rows([0.7, 0.85, 0.9], 0.8), "votes")
    assert found["unaided_experts"] == 2 and found["aided_one_accuracy"] == 0.8
    assert (
        found["text"] == "votes: 2 unaided experts match one aided expert (validation accuracy 0.850 ≥ 0.800)"
    )
    assert question.answer(_rows([0.9], 0.8), "votes")["text"].startswith("votes: 1 unaided expert matches")
    missing = question.answer(_rows([0.5, 0.6], 0.8), "votes")
    assert missing["unaided_experts"] is None
    assert missing["text"].startswith("votes: not within the tested range — 2 unaided experts reach")


def test_params_are_checked() -> None:
    assert TrainingQuestionParams(experts=[3, 1, 2, 2]).experts == [1, 2, 3]
    with pytest.raises(ValidationError, match="experts must include 1"):
        TrainingQuestionParams(experts=[2, 3])
    with pytest.raises(ValidationError, match="runs; at most"):
        TrainingQuestionParams(experts=list(range(1, 11)), repeats=50, losses=["votes", "bce"])
    with pytest.raises(ValidationError):
        TrainingQuestionParams.model_validate({"experts": [1], "unknown": 1})
    kind = job_kind("training_question")
    assert kind is not None and kind.params is TrainingQuestionParams
    assert kind.checked_params({"experts": [1, 2]}) == {"experts": [1, 2]}


def test_the_question_on_a_tiny_configuration_is_deterministic_and_sane() -> None:
    pytest.importorskip("torch")
    from worker.training.question import answer_question

    params = TrainingQuestionParams(**TINY)
    reported: list[tuple[float, str]] = []
    first = answer_question(params, lambda fraction, message: reported.append((fraction, message)))
    second = answer_question(params, lambda fraction, message: None)
    assert first == second  # same seed, same numbers, run after run
    assert set(first) == {"params", "rows", "answers", "answer", "runs"}
    assert [(r["loss"], r["mode"], r["experts"]) for r in first["rows"]] == [
        (loss, mode, k) for loss in ("votes", "bce") for mode in ("unaided", "aided") for k in (1, 2)
    ]
    for row in first["rows"]:
        assert all(0.0 <= value <= 1.0 for value in row["accuracies"]) and len(row["accuracies"]) == 1
        assert 0.0 <= row["accuracy_mean"] <= 1.0 and row["accuracy_sd"] == 0.0
        assert 0.0 <= row["label_precision"] <= 1.0 and 0.0 <= row["label_recall"] <= 1.0
    runs = {(r["loss"], r["mode"], r["experts"]): r for r in first["runs"]}
    for mode in ("unaided", "aided"):  # VotesLoss of one expert is BCE: the same network
        assert runs[("votes", mode, 1)]["accuracy"] == runs[("bce", mode, 1)]["accuracy"]
    for loss in ("votes", "bce"):
        expected = question.answer(first["rows"], loss)
        assert first["answers"][loss] == expected
        assert expected["unaided_experts"] in (1, 2, None)
    assert first["answer"] == first["answers"]["votes"]["text"]
    assert reported[-1][0] == pytest.approx(1.0) and all(0.0 <= f <= 1.0 for f, _ in reported)
    svg = question.figure(first)
    assert svg.startswith(b"<?xml") and b"<svg" in svg
    text = question.describe(first)
    assert "unaided" in text and first["answer"] in text
    json.dumps(first)  # a job result must be JSON


def test_cli_training_question(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    figure = tmp_path / "question.svg"
    options = ["--experts", "1,2", "--repeats", "1", "--epochs-unfrozen", "1", "--patch-size", "16"]
    options += ["--background-per-image", "2", "--device", "cpu", "--cpu-threads", "1"]
    code = main(["plan", "--training-question", *options, "--json", "--figure", str(figure)])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["params"]["experts"] == [1, 2] and result["params"]["losses"] == ["votes"]
    assert len(result["rows"]) == 4 and figure.read_bytes().startswith(b"<?xml")
    assert main(["plan", "--training-question", "--experts", "2,3"]) == 2
    assert "experts must include 1" in capsys.readouterr().err
    assert main(["plan", "--training-question", "--kind", "grade"]) == 2
    assert main(["plan", "--training-question", "--experts", "one"]) == 2
    assert "whole numbers" in capsys.readouterr().err
