"""VotesLoss: binary cross-entropy with one weight per sample from the number of experts who voted for it.

For predicted probabilities p = σ(z) of n samples with labels y ∈ {0, 1} and weights w:

    VotesLoss(y, p, w) = −α/n · Σ_i w_i · [y_i log p_i + (1 − y_i) log(1 − p_i)]      (paper, Eq. 1)

The weights come from each sample's votes v (experts who annotated its cell, from `nms_votes`):
- ``paper`` (Eq. 1):  w = (v − min v) / (max v − min v) over the training set, all 1 when max v = min v.
  The cell with the fewest votes gets weight 0: it does not count at all.
- ``published`` (the authors' notebooks): w = v / N · 0.95, N = experts in the training set (min fixed at
  0); a cell every expert marked weighs 0.95, one marked by a single expert 0.95/N.
Negatives (look-alikes and background, no votes of their own) weigh as the most-voted positives: 1 under
``paper``, 0.95 under ``published``. With every w = 1 and α = 1 the loss is plain BCE.
"""

from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

Weighting = Literal["paper", "published"]
PUBLISHED_SCALE = 0.95


def sample_weights(
    votes: npt.NDArray[np.int64], positive: npt.NDArray[np.bool_], weighting: Weighting, n_experts: int
) -> npt.NDArray[np.float32]:
    """Weights (N,) of samples with votes (N,) (ignored for negatives) under one weighting (module text)."""
    from app.evaluation.metrics import votes_loss_weights

    weights = np.empty(len(votes), dtype=np.float64)
    if weighting == "paper":
        weights[positive] = votes_loss_weights(votes[positive])
        weights[~positive] = 1.0
    else:
        weights[positive] = votes[positive] / max(n_experts, 1) * PUBLISHED_SCALE
        weights[~positive] = PUBLISHED_SCALE
    return weights.astype(np.float32)


class VotesLoss(nn.Module):
    """−α/n · Σ w·[y log σ(z) + (1 − y) log(1 − σ(z))] over logits z (n,), targets y (n,), weights w (n,).

    Computed from logits with `binary_cross_entropy_with_logits` (numerically stable log σ).

    >>> VotesLoss()(torch.zeros(2), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]))  # (log 2 + 0) / 2
    tensor(0.3466)
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        per_sample = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        return self.alpha * (per_sample * weights).mean()
