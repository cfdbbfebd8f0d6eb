"""An LSTM language model: embedding, stacked LSTM layers, an untied linear decoder.

The network of PyTorch's ``word_language_model`` example (Zaremba et al., 2014), which the
CD-GraB authors train on WikiText-2 (Cooper et al., NeurIPS 2023; ../shared/papers/cd-grab.md,
section 5): embedding 32, two LSTM layers of 32, decoder to the vocabulary, no dropout. The LSTM
is written with plain tensor operations (PyTorch's gate order i, f, g, o and its two biases),
so that ``torch.func.vmap`` and ``grad`` run it for all workers at once as for any module
(:mod:`lowcomm.problems.torch_model`); with the same weights it computes what ``nn.LSTM`` does.

Initialisation follows the example's ``init_weights``: embedding and decoder weights uniform in
[-0.1, 0.1], decoder bias 0, every LSTM weight and bias uniform in [-1/sqrt(H), 1/sqrt(H)] (as
``nn.LSTM``), all drawn from a generator seeded by ``seed``. No submodule has a ``weight``, so
lowcomm keeps these values instead of drawing its fan-in initialisation
(:meth:`TorchModel.init_params`).

Departure from the authors' script: every example starts from a zero hidden state. lowcomm's
steps are pure functions of (model, batch), so the state the script carries (detached) from
one bptt chunk to the next cannot be kept; each chunk of 35 tokens is predicted from its own
tokens only, which raises the loss of its first tokens.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lowcomm.core.errors import InvalidConfigError

INIT_RANGE = 0.1
EVAL_BATCH = 2
"""Examples per forward pass when lowcomm evaluates the model (bounds the logits' memory)."""


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> nn.Parameter:
    """A parameter drawn from U(-bound, bound)."""
    return nn.Parameter((2 * torch.rand(shape, generator=generator) - 1) * bound)


class LSTMLayer(nn.Module):
    """One LSTM layer over whole sequences ``[N, T, in] -> [N, T, hidden]``, from a zero state."""

    def __init__(self, inputs: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(hidden)
        self.w_ih = _uniform((4 * hidden, inputs), bound, generator)
        self.w_hh = _uniform((4 * hidden, hidden), bound, generator)
        self.b_ih = _uniform((4 * hidden,), bound, generator)
        self.b_hh = _uniform((4 * hidden,), bound, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden states of every step; the input projection is one matrix product."""
        projected = F.linear(x, self.w_ih, self.b_ih + self.b_hh)
        h = c = x.new_zeros(x.shape[0], self.w_hh.shape[1])
        outputs = []
        for step in projected.unbind(1):  # unbind: its backward stacks, no zero-filled copies
            i, f, g, o = (step + F.linear(h, self.w_hh)).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs, dim=1)


class LanguageModel(nn.Module):
    """Next-token logits ``[..., T, vocab]`` for token ids ``[..., T]`` (any numeric dtype).

    Leading axes are any number of sequences (lowcomm's examples of G streams are
    ``[G, T]``). ``eval_batch`` and ``metric_name`` tell lowcomm to evaluate in blocks of
    :data:`EVAL_BATCH` examples and to report test perplexity (docs/api.md).
    """

    eval_batch = EVAL_BATCH
    metric_name = "perplexity"

    def __init__(
        self, vocab: int, embedding: int = 32, hidden: Sequence[int] = (32, 32), seed: int = 0
    ) -> None:
        super().__init__()
        if vocab < 1 or embedding < 1 or not hidden or min(hidden) < 1:
            allowed = "vocab, embedding and every hidden width >= 1, at least one layer"
            given = f"vocab={vocab}, embedding={embedding}, hidden={tuple(hidden)}"
            raise InvalidConfigError("model", "language_model", allowed, given)
        generator = torch.Generator().manual_seed(seed)
        self.embedding = _uniform((vocab, embedding), INIT_RANGE, generator)
        widths = (embedding, *hidden)
        self.layers = nn.ModuleList(
            LSTMLayer(a, b, generator) for a, b in itertools.pairwise(widths)
        )
        self.decoder = _uniform((vocab, widths[-1]), INIT_RANGE, generator)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the next token after each position."""
        lead, length = tokens.shape[:-1], tokens.shape[-1]
        h = F.embedding(tokens.reshape(-1, length).long(), self.embedding)
        for layer in self.layers:
            h = layer(h)
        return F.linear(h, self.decoder, self.decoder_bias).reshape(*lead, length, -1)


def language_model(
    vocab: int, embedding: int = 32, hidden: Sequence[int] = (32, 32), seed: int = 0
) -> LanguageModel:
    """The CD-GraB authors' WikiText-2 LSTM (defaults) for a vocabulary of ``vocab`` words."""
    return LanguageModel(vocab, embedding, hidden, seed)
