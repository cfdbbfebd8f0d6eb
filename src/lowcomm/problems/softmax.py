"""Multiclass L2-regularised softmax (multinomial logistic) regression in closed form.

Parameters are a weight matrix ``W[C, F]`` flattened row-major (class-major); with an intercept
the bias of class c is the last column of its row, i.e. the design gets a trailing 1 and
``F = n_features + 1``. With logits ``z_i = W a_i``, ``p_i = softmax(z_i)``, one-hot ``e_i`` of
the label and normalised weights ``ω_i``:

    f(W) = Σ_i ω_i (logsumexp(z_i) - z_{i, y_i}) + (l2 / 2) ||W||²
    ∇f(W) = Σ_i ω_i (p_i - e_i) a_iᵀ + l2 W
    ∇²f(W)[V] = Σ_i ω_i (diag(p_i) - p_i p_iᵀ)(V a_i) a_iᵀ + l2 V

(Bishop, *Pattern Recognition and Machine Learning*, §4.3.4). The model is over-parameterised
(adding one vector to every row leaves p unchanged), so only ``l2 > 0`` makes it strictly convex.
"""

from __future__ import annotations

import torch

from lowcomm.core.device import as_device
from lowcomm.core.errors import InvalidConfigError
from lowcomm.problems.linear import (
    dense,
    design_matrix,
    matmul,
    normalise_weights,
    rmatmul,
    squared_norm,
)


class SoftmaxRegression:
    """Softmax regression over ``n_classes`` with labels 0..C-1; zero initialisation.

    ``dim = n_classes * (n_features + fit_intercept)``; the bias is penalised by ``l2`` too.
    Features of any shape are flattened, so ``n_features`` is their product. Parameters live on
    ``device`` (None: torch's default device).
    """

    metric_name = "accuracy"

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        l2: float = 0.0,
        fit_intercept: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if n_features < 1:
            raise InvalidConfigError("n_features", "SoftmaxRegression", ">= 1", n_features)
        if n_classes < 2:
            raise InvalidConfigError("n_classes", "SoftmaxRegression", ">= 2", n_classes)
        if l2 < 0:
            raise InvalidConfigError("l2", "SoftmaxRegression", ">= 0", l2)
        self.n_features = n_features
        self.n_classes = n_classes
        self.l2 = float(l2)
        self.fit_intercept = fit_intercept
        self.dtype = dtype
        self.device = as_device(device)
        self.dim = n_classes * (n_features + int(fit_intercept))
        self.segments: tuple[int, ...] = (self.dim,)

    def init_params(self, generator: torch.Generator) -> torch.Tensor:
        """Zeros ``[d]`` (the objective is convex, so no random start is needed)."""
        return torch.zeros(self.dim, dtype=self.dtype, device=self.device)

    def _matrix(self, flat: torch.Tensor) -> torch.Tensor:
        """``[w, d]`` viewed as weight matrices ``[w, C, F]``."""
        return flat.view(flat.shape[0], self.n_classes, -1)

    def _forward(self, params: torch.Tensor, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Design ``A[w, b, F]`` and logits ``Z = A Wᵀ``, ``[w, b, C]``."""
        A = design_matrix(X, self.fit_intercept)
        return A, matmul(A, self._matrix(params).transpose(1, 2))

    def loss(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """Weighted mean cross-entropy plus ``(l2/2)||x||²``, ``[w]``."""
        _, Z = self._forward(params, X)
        ce = torch.logsumexp(Z, dim=2) - Z.gather(2, y[..., None]).squeeze(2)
        data = torch.einsum("wb,wb->w", normalise_weights(weight), ce)
        return data + 0.5 * self.l2 * squared_norm(params)

    def _residuals(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Design ``A`` and logit gradients ``p_i - e_i``, ``[w, b, C]``.

        ``e_i`` is subtracted as 1 at the label, without building the one-hot (same bits).
        """
        A, Z = self._forward(params, X)
        return A, torch.softmax(Z, dim=2).scatter_(2, y[..., None], -1.0, reduce="add")

    def grad(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """``Σ_i ω_i (p_i - e_i) a_iᵀ + l2 W`` flattened, ``[w, d]``."""
        A, R = self._residuals(params, X, y)
        G = rmatmul(A, R * normalise_weights(weight)[..., None])
        return G.flatten(start_dim=1) + self.l2 * params

    def per_example_grads(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """``(p_i - e_i) a_iᵀ + l2 W`` flattened for every example, ``[w, b, d]``."""
        A, R = self._residuals(params, X, y)
        G = (R.unsqueeze(-1) * dense(A).unsqueeze(-2)).flatten(start_dim=2)
        return G + self.l2 * params.unsqueeze(1)

    def example_grad(self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:meth:`grad` on one dense example per worker with unit weight, ``[w, d]``.

        Its outer product is the one-term sum of ``grad``'s, so the bits are the same.
        """
        return self.per_example_grads(params, X, y).squeeze(1)

    def _curvature(
        self, params: torch.Tensor, X: torch.Tensor, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Design ``A``, probabilities ``p[w, b, C]`` and normalised weights ``ω[w, b]``."""
        A, Z = self._forward(params, X)
        return A, torch.softmax(Z, dim=2), normalise_weights(weight)

    def hvp(
        self,
        params: torch.Tensor,
        X: torch.Tensor,
        y: torch.Tensor,
        weight: torch.Tensor,
        v: torch.Tensor,
    ) -> torch.Tensor:
        """``Σ_i ω_i (p ⊙ u_i - p (p·u_i)) a_iᵀ + l2 V`` with ``u_i = V a_i``, ``[w, d]``."""
        A, P, omega = self._curvature(params, X, weight)
        U = matmul(A, self._matrix(v).transpose(1, 2))
        JU = P * (U - (P * U).sum(dim=2, keepdim=True))
        Hv = rmatmul(A, JU * omega[..., None])
        return Hv.flatten(start_dim=1) + self.l2 * v

    def hessian(
        self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        """``Σ_i ω_i (diag(p_i) - p_i p_iᵀ) ⊗ a_i a_iᵀ + l2 I``, ``[w, d, d]`` (small d).

        Two batched products over all workers, no ``[w, b, C, F, C]`` intermediate: with rows
        ``p_i ⊗ a_i`` of ``B[w, b, d]`` and ``Ω = diag(ω)``, ``H = -(Ω B)ᵀ B`` plus, on the
        diagonal block of class c, ``Aᵀ diag(ω ⊙ p_c) A`` (the rows of ``(Ω B)ᵀ`` times ``A``).
        """
        A, P, omega = self._curvature(params, X, weight)
        A = dense(A)
        w, b, f = A.shape
        c = self.n_classes
        B = (P[..., :, None] * A[..., None, :]).reshape(w, b, self.dim)
        weighted = ((P * omega[..., None]).mT[..., None, :] * A.mT[:, None]).reshape(w, self.dim, b)
        H = torch.bmm(weighted, B).neg_()
        blocks = torch.bmm(weighted, A).view(w, c, f, f).permute(0, 2, 3, 1)
        H.view(w, c, f, c, f).diagonal(dim1=1, dim2=3).add_(blocks)
        H.diagonal(dim1=1, dim2=2).add_(self.l2)
        return H

    def metric(self, params: torch.Tensor, X: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy of ``argmax_c z_c`` on ``X[n, ...]``, ``y[n]``."""
        _, Z = self._forward(params[None], X[None])
        return (Z[0].argmax(dim=1) == y).double().mean().item()
