"""NumPy references written straight from the algorithms' definitions, in float64.

They share only the random batch positions with lowcomm (drawn from the same keyed streams),
and compute everything else independently.
"""

from __future__ import annotations

import numpy as np
import torch

from lowcomm.core.rng import Streams


def logistic_loss(x: np.ndarray, A: np.ndarray, y: np.ndarray, l2: float) -> float:
    s = 2.0 * y - 1.0
    return float(np.mean(np.logaddexp(0.0, -s * (A @ x))) + 0.5 * l2 * x @ x)


def logistic_grad(x: np.ndarray, A: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    s = 2.0 * y - 1.0
    sigma = 1.0 / (1.0 + np.exp(s * (A @ x)))
    return -(A * (s * sigma)[:, None]).mean(axis=0) + l2 * x


def shares(shards) -> np.ndarray:
    """Each worker's share M n_m / N of the training set (1 on equal shards)."""
    sizes = np.array([len(y) for _, y in shards])
    return len(sizes) * sizes / sizes.sum()


def batch(seed: int, worker: int, round_: int, size: int, n: int, step: int = 0) -> np.ndarray:
    draw = Streams(seed).integers(
        "batch", torch.tensor([worker]), round_, size, torch.tensor([n]), step
    )
    return draw[0].numpy()


def sgd(shards, l2, seed, rounds, lr, b, momentum=0.0):
    x = np.zeros(shards[0][0].shape[1])
    v = np.zeros_like(x)
    for r in range(rounds):
        grads = []
        for w, (A, y) in enumerate(shards):
            i = batch(seed, w, r, b, len(y))
            grads.append(logistic_grad(x, A[i], y[i], l2))
        v = momentum * v + np.average(grads, axis=0, weights=[len(y) for _, y in shards])
        x = x - lr * v
    return x


def local_sgd(shards, l2, seed, rounds, lr, b, steps):
    x = np.zeros(shards[0][0].shape[1])
    for r in range(rounds):
        models = []
        for w, (A, y) in enumerate(shards):
            z = x.copy()
            for s in range(steps):
                i = batch(seed, w, r, b, len(y), s)
                z = z - lr * logistic_grad(z, A[i], y[i], l2)
            models.append(z)
        x = np.average(models, axis=0, weights=[len(y) for _, y in shards])
    return x


def gd(shards, l2, iterations, step0=1.0, shrink=0.5, count=20, c=1e-4):
    A = np.concatenate([a for a, _ in shards])
    y = np.concatenate([t for _, t in shards])
    x = np.zeros(A.shape[1])
    for _ in range(iterations):
        f, g = logistic_loss(x, A, y, l2), logistic_grad(x, A, y, l2)
        steps = step0 * shrink ** np.arange(count)
        values = np.array([logistic_loss(x - eta * g, A, y, l2) for eta in steps])
        ok = np.nonzero(values <= f - c * steps * (g @ g))[0]
        x = x - steps[ok[0] if ok.size else np.argmin(values)] * g
    return x


def top_k(v: np.ndarray, k: int) -> np.ndarray:
    """v with all but its k largest-magnitude entries zeroed."""
    out = np.zeros_like(v)
    keep = np.argpartition(-np.abs(v), k - 1)[:k]
    out[keep] = v[keep]
    return out


def lasg_wk2(shards, l2, seed, rounds, lr, b, window, weights, density=None, previous=False):
    """LASG-WK2 (density None) or SASG, straight from the SASG notebooks' loop.

    Worker m's gradients are those of its share of the total, share_m * f_m^mean.
    ``previous``: the authors' multi-process variant, the reference is the previous iterate.
    """
    M, d, share = len(shards), shards[0][0].shape[1], shares(shards)
    theta = np.zeros(d)
    memory, last, anchor = np.zeros((M, d)), np.zeros((M, d)), np.zeros((M, d))
    skips, diffs, uploads = np.zeros(M), [], 0
    for r in range(rounds):
        padded = (diffs + [0.0] * len(weights))[: len(weights)]
        thr = float(np.dot(weights, padded)) / (lr**2 * M**2)
        for m, (A, y) in enumerate(shards):
            i = batch(seed, m, r, b, len(y))
            g = share[m] * logistic_grad(theta, A[i], y[i], l2)
            if r >= window:
                g_old = share[m] * logistic_grad(anchor[m], A[i], y[i], l2)
                if np.sum((g - g_old) ** 2) <= thr and skips[m] <= window:
                    skips[m] += 1
                    continue
            v = lr * g + memory[m]
            sent = v if density is None else top_k(v, max(1, int(density * d)))
            memory[m] = 0.0 if density is None else v - sent
            last[m], anchor[m], skips[m] = sent, theta, 1
            uploads += 1
        if previous:
            anchor[:] = theta
        new = theta - last.sum(axis=0)
        diffs.insert(0, float(np.sum((new - theta) ** 2)))
        theta = new
    return theta, uploads


def logistic_hessian(x: np.ndarray, A: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    p = 1.0 / (1.0 + np.exp(-(A @ x)))
    return (A * (p * (1 - p))[:, None]).T @ A / len(y) + l2 * np.eye(len(x))


def backtrack(f, x, p, g, shrink=0.5, beta=0.1, count=30):
    """The first of 1, shrink, shrink^2, ... with Armijo decrease (the lowest trial if none)."""
    steps = shrink ** np.arange(count)
    values = np.array([f(x - a * p) for a in steps])
    ok = np.nonzero(values <= f(x) - beta * steps * (p @ g))[0]
    return steps[ok[0] if ok.size else np.argmin(values)]


def local_newton_round(shards, l2, x, local_steps):
    """Every worker: L Newton steps with backtracking on its own objective; then the mean."""
    models = []
    for A, y in shards:
        w = x.copy()
        for _ in range(local_steps):
            g = logistic_grad(w, A, y, l2)
            p = np.linalg.solve(logistic_hessian(w, A, y, l2), g)
            a = backtrack(lambda z, A=A, y=y: logistic_loss(z, A, y, l2), w, p, g)
            w = w - a * p
        models.append(w)
    return np.mean(models, axis=0)


def giant_iteration(shards, l2, x):
    """Global gradient, mean of local Newton directions, line search over 4^0 .. 4^-9 (c 0.1)."""
    A = np.concatenate([a for a, _ in shards])
    y = np.concatenate([t for _, t in shards])
    g = logistic_grad(x, A, y, l2)
    p = np.mean([np.linalg.solve(logistic_hessian(x, a, t, l2), g) for a, t in shards], axis=0)
    return x - backtrack(lambda z: logistic_loss(z, A, y, l2), x, p, g, 0.25, 0.1, 10) * p


def hogwild_ib(shards, l2, seed, rounds, sizes, step, minibatch=False):
    """Synchronous rounds: every worker starts round i from v; the aggregator adds the updates.

    ``sizes(i)`` is s_i and ``step(t)`` eta(t), with t_i = n (s_0 + ... + s_{i-1}); worker c's
    gradients are those of its share of the total, share_c * f_c^mean. Local step j uses the
    j-th of the round's s_i positions (one draw per worker and round, as in the mini-batch mode).
    """
    n, share = len(shards), shares(shards)
    v = np.zeros(shards[0][0].shape[1])
    done = 0
    for i in range(rounds):
        eta, total = step(n * done), np.zeros_like(v)
        for w, (A, y) in enumerate(shards):
            drawn = batch(seed, w, i, sizes(i), len(y))  # the round's s_i positions, both modes
            if minibatch:
                total += eta * sizes(i) * share[w] * logistic_grad(v, A[drawn], y[drawn], l2)
                continue
            z = v.copy()
            for j in range(sizes(i)):
                idx = drawn[j : j + 1]
                z = z - eta * share[w] * logistic_grad(z, A[idx], y[idx], l2)
            total += v - z
        v = v - total
        done += sizes(i)
    return v


def oja_direction(v: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Mean over rows of -((x.v) x - (x.v)^2 v)."""
    p = X @ v
    return -(p[:, None] * X - (p**2)[:, None] * v).mean(axis=0)


def delayed_msgd(X_shards, v0, rounds, lr, mu, b, seed, taus):
    """v_{k+1} = v_k + mu (v_k - v_{k-1}) - lr mean_w g(v_{k - tau_{k,w}}), v_j = v_0 for j < 0.

    Worker w's g is scaled by its share M n_w / N of the total.
    """
    share = shares([(X, X[:, 0]) for X in X_shards])
    iterates = [v0.copy()]
    previous = v0.copy()
    for k in range(rounds):
        grads = []
        for w, X in enumerate(X_shards):
            stale = iterates[max(0, k - int(taus[k][w]))]
            idx = batch(seed, w, k, b, len(X))
            grads.append(share[w] * oja_direction(stale, X[idx]))
        v = iterates[-1]
        new = v + mu * (v - previous) - lr * np.mean(grads, axis=0)
        previous = v
        iterates.append(new)
    return iterates[-1]


def first_order(seed: int, worker: int, n: int) -> np.ndarray:
    """A worker's epoch-0 uniform order of its n examples (the stream ``order``, epoch 0)."""
    draw = Streams(seed).permutations("order", torch.tensor([worker]), 0, torch.tensor([n]), n)
    return draw[0].numpy()


def cd_grab_minibatch(shards, l2, seed, epochs, lr, b, momentum):
    """CD-GraB balancing minibatch units (spec cd-grab.md 3.3), from the spec's pseudo-code.

    Unit u of worker j is positions u*b .. (u+1)*b - 1 of its epoch-0 order (fixed for the run);
    epoch 0 visits the units in turn. Each step every worker takes its next unit's mean gradient;
    the heavy-ball step uses their mean. The unit gradients of steps 2i and 2i+1 form a pair:
    one running sum s over all workers, pairs first then workers; <s, g_2i - g_2i+1> <= 0
    puts unit 2i first, else unit 2i+1; firsts fill the next order from the front, the others
    from the back. Returns the model after every step and every epoch's unit orders (plus the
    order after the last epoch).
    """
    m = len(shards)
    n = min(len(y) for _, y in shards) // (2 * b) * (2 * b)
    groups = [first_order(seed, j, len(y))[:n].reshape(-1, b) for j, (_, y) in enumerate(shards)]
    x = np.zeros(shards[0][0].shape[1])
    v = np.zeros_like(x)
    orders = [list(range(n // b)) for _ in range(m)]
    models, seen = [], []
    for _ in range(epochs):
        seen.append(orders)
        s = np.zeros_like(x)
        front: list[list[int]] = [[] for _ in range(m)]
        back: list[list[int]] = [[] for _ in range(m)]
        previous: list[np.ndarray] = []
        for step in range(n // b):
            grads = []
            for j, (A, y) in enumerate(shards):
                idx = groups[j][orders[j][step]]
                grads.append(logistic_grad(x, A[idx], y[idx], l2))
            if step % 2 == 1:
                for j in range(m):
                    first, second = orders[j][step - 1], orders[j][step]
                    delta = previous[j] - grads[j]
                    if s @ delta <= 0:
                        front[j].append(first)
                        back[j].append(second)
                        s = s + delta
                    else:
                        front[j].append(second)
                        back[j].append(first)
                        s = s - delta
            previous = grads
            v = momentum * v + np.mean(grads, axis=0)
            x = x - lr * v
            models.append(x.copy())
        orders = [front[j] + back[j][::-1] for j in range(m)]
    seen.append(orders)
    return np.array(models), seen
