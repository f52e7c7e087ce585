"""VotesLoss: Eq. 1 against a hand-computed value, BCE when every weight is 1, gradients, both weightings."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from worker.training.votes_loss import VotesLoss, sample_weights  # noqa: E402


def test_hand_computed_example():
    # p = σ(z): σ(0) = 0.5, σ(ln 3) = 0.75, σ(−ln 3) = 0.25; y = 1, 1, 0; w = 1, 0.5, 0; α = 2
    logits = torch.tensor([0.0, math.log(3.0), -math.log(3.0)])
    targets = torch.tensor([1.0, 1.0, 0.0])
    weights = torch.tensor([1.0, 0.5, 0.0])
    expected = -2.0 / 3.0 * (1.0 * math.log(0.5) + 0.5 * math.log(0.75) + 0.0 * math.log(0.75))
    assert VotesLoss(alpha=2.0)(logits, targets, weights).item() == pytest.approx(expected, rel=1e-6)


def test_equals_binary_cross_entropy_when_all_weights_are_one():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=generator) * 3
    targets = (torch.rand(50, generator=generator) < 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), targets)
    assert VotesLoss()(logits, targets, torch.ones(50)).item() == pytest.approx(bce.item(), rel=1e-5)


def test_gradient_check():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(6, dtype=torch.float64, generator=generator, requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    weights = torch.tensor([0.0, 1.0, 0.25, 1.0, 0.5, 1.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: VotesLoss(alpha=1.5)(z, targets, weights), (logits,))


def test_paper_weighting_gives_the_fewest_voted_cell_weight_zero_and_negatives_one():
    votes = np.array([1, 2, 3, 0, 0])
    positive = np.array([True, True, True, False, False])
    weights = sample_weights(votes, positive, "paper", n_experts=3)
    assert weights.tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]


def test_paper_weighting_is_all_ones_when_every_cell_has_the_same_votes():
    weights = sample_weights(np.array([1, 1, 0]), np.array([True, True, False]), "paper", n_experts=1)
    assert weights.tolist() == [1.0, 1.0, 1.0]


def test_published_weighting_is_votes_over_experts_times_095():
    votes = np.array([1, 2, 4, 0])
    positive = np.array([True, True, True, False])
    weights = sample_weights(votes, positive, "published", n_experts=4)
    assert weights.tolist() == pytest.approx([0.2375, 0.475, 0.95, 0.95])
