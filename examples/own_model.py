"""Your own network, loss and NumPy data through lowcomm's Python API.

Twenty workers each hold a label-skewed slice (Dirichlet 0.5) of a three-class problem; SASG
trains a small network with a label-smoothed loss and the run reports what it sent.

    python examples/own_model.py
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import lowcomm


class Net(nn.Module):
    """A two-layer network."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(10, 32)
        self.out = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(x)))


def smoothed(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with label smoothing (any reduction works)."""
    return F.cross_entropy(logits, y, label_smoothing=0.05)


rng = np.random.default_rng(0)
y = rng.integers(0, 3, 3000)
X = rng.normal(size=(3000, 10)) + 2.5 * np.eye(3, 10)[y]

net = Net()
result = lowcomm.run(
    "sasg",
    model=net,
    loss=smoothed,
    data=(X[:2400], y[:2400]),
    test=(X[2400:], y[2400:]),
    workers=20,
    partition="dirichlet:0.5",
    rounds=100,
    settings={"lr": 0.2, "batch_size": 16},
    seed=0,
)
assert result is not None
net.load_state_dict(result.model)
last = result.history.iloc[-1]
print(f"train loss {last.train_loss:.4f}, test accuracy {last.test_metric:.3f}")
print(
    f"uploads {int(last.uploads):,} of {20 * 100:,} worker-rounds, {last.bytes_up / 1e3:.1f} kB up"
)
