"""Any stateless ``nn.Module`` as a :class:`~lowcomm.problems.base.Problem`, through ``torch.func``.

The module's parameters are replaced by slices of one flat vector (``functional_call``), and
every method is a per-worker function vectorised over the worker axis with ``vmap``: gradients by
reverse mode, per-example gradients by a nested ``vmap`` of ``grad`` (Opacus-style), Hessian-vector
products by forward-over-reverse ``jvp(grad)`` (Pearlmutter, 1994), which costs a small multiple of
a gradient.

The objective must be a pure function of the parameters, so the module runs as in evaluation
mode (dropout off) and its BatchNorm layers normalise by the statistics of the batch at hand
(``torch.func.replace_all_batch_norm_modules_``, as in DDP without SyncBatchNorm): each worker's
mini-batch while training, the whole training or test set when the engine evaluates. Running
statistics are not tracked while training; :meth:`TorchModel.state_dict` fills them from one
pass over the training set at the final parameters, so the returned module in ``eval()`` mode
normalises by the training set's statistics. Other buffers are constants.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import (
    functional_call,
    grad,
    hessian,
    jvp,
    replace_all_batch_norm_modules_,
    vmap,
)

from lowcomm.core.device import as_device
from lowcomm.core.errors import InvalidConfigError
from lowcomm.problems.linear import normalise_weights

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METRICS = ("accuracy", "perplexity")


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy ``logsumexp(z) - z_y``, ``[b]``.

    Sequence targets ``y[b, ...]`` with logits ``[b, ..., C]`` (a language model's next
    tokens): each example's mean over its positions, so that the mean over equal-length
    examples is the mean token cross-entropy (whose exponential is the perplexity).
    """
    if y.dim() == 1:
        return F.cross_entropy(logits, y, reduction="none")
    tokens = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    return tokens.reshape(y.shape[0], -1).mean(dim=1)


def squared_error(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example mean squared error against the one-hot label, ``[b]``."""
    target = F.one_hot(y, outputs.shape[-1]).to(outputs.dtype)
    return (outputs - target).square().mean(dim=-1)


def per_example(loss: Loss) -> Loss:
    """A loss of any reduction (``mean``, ``sum`` or ``none``) as per-example values, ``[b]``.

    Each example is passed alone as a batch of one, so ``F.cross_entropy`` with its default
    mean reduction gives the same values as with ``reduction="none"``.
    """

    def one(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return loss(z[None], t[None]).sum()

    return vmap(one)


class TorchModel:
    """A module with a per-example loss, flat parameters and L2 penalty ``(l2/2)||x||²``.

    ``segments`` holds the numel of each parameter in ``named_parameters`` order, which is also
    the layout of the flat vector. The module's own parameter values are never read by the
    objective (only their shapes), so the module itself is not modified or cast to ``dtype``.

    Two optional attributes of the module change how it is evaluated: ``metric_name``
    (:data:`METRICS`; default ``accuracy``) and ``eval_batch``, the examples per forward pass
    of :meth:`loss` and :meth:`metric` (default: all at once), which bounds the memory of
    large outputs such as a language model's logits without changing the values.
    """

    def __init__(
        self,
        module: nn.Module,
        loss: Loss = cross_entropy,
        l2: float = 0.0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if l2 < 0:
            raise InvalidConfigError("l2", "TorchModel", ">= 0", l2)
        self.device = as_device(device)
        named = list(module.named_parameters())
        self.original = module
        self.module = replace_all_batch_norm_modules_(copy.deepcopy(module)).eval()
        self.buffers = {
            name: b.to(self.device, dtype) if b.is_floating_point() else b.to(self.device)
            for name, b in self.module.named_buffers()
        }
        self.loss_fn = loss
        self.metric_name = getattr(module, "metric_name", "accuracy")
        if self.metric_name not in METRICS:
            allowed = f"a module whose metric_name is one of {', '.join(METRICS)}"
            raise InvalidConfigError("model", "TorchModel", allowed, self.metric_name)
        self.eval_batch: int | None = getattr(module, "eval_batch", None)
        self.l2 = float(l2)
        self.dtype = dtype
        self.names = tuple(name for name, _ in named)
        self.shapes = tuple(p.shape for _, p in named)
        self.segments = tuple(p.numel() for _, p in named)
        self.dim = sum(self.segments)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """One worker's ``flat[d]`` as the module's named parameter tensors (views)."""
        parts = flat.split(self.segments)
        return {n: t.view(s) for n, t, s in zip(self.names, parts, self.shapes, strict=True)}

    def _forward(self, flat: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """The module's outputs at parameters ``flat[d]`` for the batch ``X``."""
        return functional_call(self.module, {**self.unflatten(flat), **self.buffers}, (X,))

    def state_dict(self, flat: torch.Tensor, X_train: torch.Tensor) -> dict[str, torch.Tensor]:
        """The original module's ``state_dict`` at ``flat[d]``.

        BatchNorm running statistics are those of the whole training set ``X_train`` at these
        parameters (one forward pass in training mode with a cumulative average).
        """
        module = copy.deepcopy(self.original)
        with torch.no_grad():
            for p, value in zip(module.parameters(), self.unflatten(flat).values(), strict=True):
                p.copy_(value.to(p.dtype))
            norms = _batch_norms(module)
            for norm in norms:
                norm.reset_running_stats()
                norm.momentum = None
            if norms:
                module.train()(X_train.to(next(module.parameters())))
        return module.state_dict()

    def init_params(self, generator: torch.Generator) -> torch.Tensor:
        """PyTorch's default Linear/Conv initialisation drawn from ``generator``, ``[d]``.

        Every parameter of a submodule whose ``weight`` has two or more dimensions is drawn
        from ``U(-1/√fan_in, 1/√fan_in)`` with ``fan_in = weight[0].numel()``, which is what
        ``reset_parameters`` of Linear and ConvNd does (kaiming-uniform with ``a = √5``; other
        such layers, e.g. Embedding, get this rule too); parameters of the remaining layers
        (e.g. LayerNorm) keep the module's current values. Draws follow parameter order and are
        made on the generator's device, then moved to ``device``.
        """
        bounds = _fan_in_bounds(self.module)
        chunks = [
            _uniform(p.shape, bounds[id(p)], generator, self.dtype)
            if id(p) in bounds
            else p.detach().to(generator.device, self.dtype).flatten()
            for p in self.module.parameters()
        ]
        return torch.cat(chunks).to(self.device)

    def _objective(
        self, flat: torch.Tensor, X: torch.Tensor, y: torch.Tensor, omega: torch.Tensor
    ) -> torch.Tensor:
        """One worker's ``Σ_i ω_i loss_i + (l2/2)||x||²`` (a scalar)."""
        return self._data_term(flat, X, y, omega) + self._penalty(flat)

    def _data_term(
        self, flat: torch.Tensor, X: torch.Tensor, y: torch.Tensor, omega: torch.Tensor
    ) -> torch.Tensor:
        """One worker's ``Σ_i ω_i loss_i`` (a scalar)."""
        return (omega * self.loss_fn(self._forward(flat, X), y)).sum()

    def _blocks(self, n: int) -> list[slice]:
        """The example blocks of one evaluation pass over ``n`` examples (``eval_batch``)."""
        size = max(1, n if self.eval_batch is None else self.eval_batch)
        return [slice(start, start + size) for start in range(0, max(n, 1), size)]

    def _example(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One example's loss plus the L2 term (a scalar)."""
        logits = self._forward(flat, x[None])
        return self.loss_fn(logits, y[None])[0] + self._penalty(flat)

    def _penalty(self, flat: torch.Tensor) -> torch.Tensor | float:
        """``(l2/2)||x||²``; a plain 0 without L2, so no gradient pass over ``x`` is spent on it."""
        return 0.5 * self.l2 * flat.dot(flat) if self.l2 else 0.0

    def loss(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Local objective per worker, ``[w]`` (summed over blocks of ``eval_batch`` examples)."""
        omega = normalise_weights(weight)
        blocks = self._blocks(X.shape[1])
        if len(blocks) == 1:
            return vmap(self._objective)(params, X, y, omega)
        total = 0.5 * self.l2 * (params * params).sum(dim=1)
        for b in blocks:
            total = total + vmap(self._data_term)(params, X[:, b], y[:, b], omega[:, b])
        return total

    def grad(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Reverse-mode gradient per worker, ``[w, d]``."""
        return vmap(grad(self._objective))(params, X, y, normalise_weights(weight))

    def per_example_grads(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """Gradient of each example's loss plus ``l2 x``, ``[w, b, d]``."""
        per_worker = vmap(grad(self._example), in_dims=(None, 0, 0))
        return vmap(per_worker)(params, X, y)

    def hvp(
        self,
        params: torch.Tensor,
        X: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """``∇²f(x) v`` per worker by forward-over-reverse differentiation, ``[w, d]``."""
        return vmap(self._hvp_one)(params, X, y, normalise_weights(weight), v)

    def _hvp_one(
        self,
        flat: torch.Tensor,
        X: torch.Tensor,
        y: torch.Tensor,
        omega: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """One worker's ``jvp`` of the gradient map at ``flat`` along ``v``."""
        gradient = grad(self._objective)
        return jvp(lambda p: gradient(p, X, y, omega), (flat,), (v,))[1]

    def hessian(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Full Hessian per worker by ``torch.func.hessian``, ``[w, d, d]``: small d only."""
        return vmap(hessian(self._objective))(params, X, y, normalise_weights(weight))

    def metric(self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
        """The test metric on ``X[n, ...]``, ``y[n, ...]``, by blocks of ``eval_batch``.

        ``accuracy``: the share of ``argmax`` of the logits equal to ``y`` (for sequence
        targets, of all positions); ``perplexity``: ``exp`` of the mean per-example loss (the
        mean token cross-entropy for equal-length sequences).
        """
        with torch.no_grad():
            scores = [self._scores(params, X[b], y[b]) for b in self._blocks(y.shape[0])]
        mean = torch.cat(scores).double().mean().item()
        return math.exp(mean) if self.metric_name == "perplexity" else mean

    def _scores(self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each example's loss (perplexity) or share of correct predictions (accuracy), ``[b]``."""
        logits = self._forward(params, X)
        if self.metric_name == "perplexity":
            return self.loss_fn(logits, y)
        return (logits.argmax(dim=-1) == y).reshape(y.shape[0], -1).double().mean(dim=1)


def _batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``module``, in ``modules()`` order."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _fan_in_bounds(module: nn.Module) -> dict[int, float]:
    """``1/√fan_in`` for every parameter of each submodule with a ≥2-D ``weight``, by id."""
    bounds: dict[int, float] = {}
    for sub in module.modules():
        weight = getattr(sub, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2:
            bound = 1.0 / math.sqrt(weight[0].numel())
            bounds.update((id(p), bound) for p in sub.parameters(recurse=False))
    return bounds


def _uniform(
    shape: torch.Size, bound: float, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    """A flat draw from ``U(-bound, bound)`` with ``shape.numel()`` entries."""
    draw = torch.rand(shape.numel(), generator=generator, dtype=dtype, device=generator.device)
    return (2 * draw - 1) * bound


def mlp(in_features: int, hidden: tuple[int, ...], n_classes: int) -> nn.Module:
    """Fully connected ReLU network ``in -> hidden... -> n_classes``; inputs are flattened."""
    widths = (in_features, *hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], n_classes))
    return nn.Sequential(*layers)


def lenet(n_classes: int = 10, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """LeNet-5-style CNN for square images ``[in_channels, image_size, image_size]``.

    conv(6, 5x5, padding 2) + ReLU + maxpool 2, conv(16, 5x5) + ReLU + maxpool 2, then fully
    connected 120, 84, ``n_classes`` (LeCun et al., 1998). For 28x28 MNIST the feature map is
    16x5x5. When the first pooled map is smaller than 10x10 (e.g. 8x8 digits: 4x4) the second
    conv is padded by 2 as well, giving 16x2x2 for 8x8. Needs ``image_size >= 4``.
    """
    if image_size < 4:
        raise InvalidConfigError("image_size", "lenet", ">= 4", image_size)
    pooled = image_size // 2
    pad = 0 if pooled >= 10 else 2
    side = (pooled + 2 * pad - 4) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=pad),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * side * side, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, n_classes),
    )
