"""Bradley-Terry scores from pairwise comparisons (Chapter 01).

A comparison says "player ``w`` beat player ``l``". The Bradley-Terry model
(Bradley & Terry 1952) gives each player a score ``s`` and says

    P(w beats l) = sigma(s_w - s_l) = 1 / (1 + exp(-(s_w - s_l)))

Scores are fitted by maximum likelihood. Only differences matter, so every
fit is pinned to mean zero (the model is shift invariant). Elo (Elo 1978) is
online stochastic gradient descent on the same likelihood, in units of
400 / ln(10) points per unit of score.

Comparisons are two integer arrays, ``winners`` and ``losers``, of equal length.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..engine.losses import bradley_terry_loss

ELO_SCALE = 400.0 / math.log(10.0)  # Elo points per unit of BT score


def check_comparisons(winners, losers, n_players: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate comparison arrays and return them as int64 numpy arrays."""
    winners, losers = np.asarray(winners), np.asarray(losers)
    if winners.shape != losers.shape or winners.ndim != 1:
        raise ValueError(f"winners and losers must be 1-D arrays of equal length, got shapes {winners.shape} and {losers.shape}")
    if winners.size == 0:
        raise ValueError("no comparisons given: winners and losers are empty")
    if not (np.issubdtype(winners.dtype, np.integer) and np.issubdtype(losers.dtype, np.integer)):
        raise ValueError("winners and losers must hold integer player indices")
    for name, array in (("winners", winners), ("losers", losers)):
        bad = np.flatnonzero((array < 0) | (array >= n_players))
        if bad.size:
            raise ValueError(f"{name}[{bad[0]}] = {array[bad[0]]} is not a player index in [0, {n_players})")
    same = np.flatnonzero(winners == losers)
    if same.size:
        raise ValueError(f"comparison {same[0]}: player {winners[same[0]]} cannot play against itself")
    return winners.astype(np.int64), losers.astype(np.int64)


def win_probability(score_a, score_b):
    """P(a beats b) = sigma(s_a - s_b). Works on floats, numpy arrays or tensors."""
    if isinstance(score_a, torch.Tensor) or isinstance(score_b, torch.Tensor):
        return torch.sigmoid(torch.as_tensor(score_a) - torch.as_tensor(score_b))
    return 1.0 / (1.0 + np.exp(-(np.asarray(score_a, dtype=float) - np.asarray(score_b, dtype=float))))


def negative_log_likelihood(scores, winners, losers, weights=None) -> torch.Tensor:
    """Summed BT negative log-likelihood, ``sum_i w_i * -log sigma(s[w_i] - s[l_i])``.

    ``scores`` may be one score vector ``(n_players,)`` or a batch ``(B, n_players)``
    with ``weights`` of shape ``(B, n_comparisons)``, one problem per row (used by
    the bootstrap, which fits all resamples at once).
    """
    scores = torch.as_tensor(scores)
    winners, losers = torch.as_tensor(winners), torch.as_tensor(losers)
    per_comparison = bradley_terry_loss(scores[..., winners], scores[..., losers], reduction="none")
    if weights is not None:
        per_comparison = per_comparison * torch.as_tensor(weights, dtype=per_comparison.dtype)
    return per_comparison.sum()


def center_scores(scores):
    """Pin the free shift: subtract the mean score (of each row, for a batch)."""
    return scores - scores.mean(axis=-1, keepdims=True)


def mle_exists(winners, losers, n_players: int, weights=None) -> bool:
    """Whether the unpenalized BT maximum-likelihood estimate is finite.

    Zermelo (1929) / Ford (1957): it is, exactly when the directed graph with an
    edge loser -> winner for every game (of positive weight) is strongly
    connected; otherwise some group won every game against the rest and its
    scores run off to infinity.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    winners, losers = np.asarray(winners), np.asarray(losers)
    if weights is not None:
        played = np.asarray(weights) > 0
        winners, losers = winners[played], losers[played]
    graph = coo_matrix((np.ones(winners.size), (losers, winners)), shape=(n_players, n_players))
    n_components, _ = connected_components(graph, directed=True, connection="strong")
    return n_components == 1


def fit_bradley_terry(winners, losers, n_players: int, *, l2: float = 0.0, weights=None, max_iter: int = 500) -> np.ndarray:
    """Maximum-likelihood BT scores, pinned to mean zero.

    Minimizes ``NLL(s) + l2/2 * ||s||^2`` with full-batch L-BFGS in float64 (the
    problem is convex). ``l2 = 0`` is the plain MLE; it is finite whenever the
    comparison graph is strongly connected (no player or group won every game).
    ``weights`` of shape ``(n_comparisons,)`` or ``(B, n_comparisons)`` weights
    each comparison (a batch gives ``B`` independent fits). Returns an array of
    shape ``(n_players,)`` or ``(B, n_players)``.
    """
    winners, losers = check_comparisons(winners, losers, n_players)
    if l2 == 0:
        rows = [None] if weights is None else np.atleast_2d(weights)
        if not all(mle_exists(winners, losers, n_players, row) for row in rows):
            warnings.warn(
                "fit_bradley_terry: some player (or group) won or lost every game it played, so the "
                "maximum-likelihood scores are infinite and the fit stops at large finite values; "
                "pass l2 > 0 (for example 0.01) for finite, slightly shrunk scores",
                RuntimeWarning,
                stacklevel=2,
            )
    batch_shape = () if weights is None or np.ndim(weights) == 1 else (np.shape(weights)[0],)
    scores = torch.zeros(*batch_shape, n_players, dtype=torch.float64, requires_grad=True)
    w = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float64)
    optimizer = torch.optim.LBFGS(
        [scores], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
        history_size=20, line_search_fn="strong_wolfe",
    )
    w_t, l_t = torch.from_numpy(winners), torch.from_numpy(losers)

    def closure():
        optimizer.zero_grad()
        loss = negative_log_likelihood(scores, w_t, l_t, w) + 0.5 * l2 * (scores**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return center_scores(scores.detach().numpy())


def pairwise_design_matrix(winners, losers, n_players: int) -> tuple[np.ndarray, np.ndarray]:
    """BT as logistic regression: one row per comparison, +1 / -1 for the two players.

    Row ``i`` has ``+1`` in the column of one player and ``-1`` in the other's; the
    label says whether the ``+1`` player won. Odd rows are written loser-first so
    both classes occur (the likelihood is the same either way). A logistic
    regression without intercept on ``(X, y)`` has exactly the BT likelihood.
    """
    winners, losers = check_comparisons(winners, losers, n_players)
    rows = np.arange(winners.size)
    flip = rows % 2 == 1
    first, second = np.where(flip, losers, winners), np.where(flip, winners, losers)
    X = np.zeros((winners.size, n_players))
    X[rows, first], X[rows, second] = 1.0, -1.0
    return X, (~flip).astype(int)


def elo_ratings(winners, losers, n_players: int, *, k: float = 32.0, initial: float = 1000.0, return_history: bool = False):
    """Classic Elo: after each game, ``R_w += k (1 - E_w)`` and ``R_l -= k (1 - E_w)``.

    ``E_w = 1 / (1 + 10 ** ((R_l - R_w) / 400))`` is the BT win probability with
    scores ``R / ELO_SCALE``. This equals one SGD step on ``-log sigma(s_w - s_l)``
    with learning rate ``k / ELO_SCALE`` (see :func:`bt_online_sgd`). The result
    depends on the order of the games, unlike the MLE.
    """
    winners, losers = check_comparisons(winners, losers, n_players)
    ratings = np.full(n_players, float(initial))
    history = np.empty((winners.size, n_players)) if return_history else None
    for t, (w, l) in enumerate(zip(winners, losers)):
        expected = 1.0 / (1.0 + 10.0 ** ((ratings[l] - ratings[w]) / 400.0))
        ratings[w] += k * (1.0 - expected)
        ratings[l] -= k * (1.0 - expected)
        if return_history:
            history[t] = ratings
    return (ratings, history) if return_history else ratings


def bt_online_sgd(winners, losers, n_players: int, *, lr: float) -> np.ndarray:
    """One pass of SGD (batch size 1) on the BT negative log-likelihood, from zero.

    The gradient of ``-log sigma(s_w - s_l)`` with respect to ``s_w`` is
    ``-(1 - sigma(s_w - s_l))``, so each step moves the winner up and the loser
    down by ``lr * (1 - P(w beats l))``: Elo's update in score units.
    """
    winners, losers = check_comparisons(winners, losers, n_players)
    scores = np.zeros(n_players)
    for w, l in zip(winners, losers):
        step = lr * (1.0 - 1.0 / (1.0 + math.exp(-(scores[w] - scores[l]))))
        scores[w] += step
        scores[l] -= step
    return scores


def simulate_arena(n_players: int = 20, n_battles: int = 2000, *, strength_std: float = 1.0, seed: int = 0):
    """A synthetic "arena": players with known strengths battle in random pairs.

    Strengths are drawn from N(0, strength_std^2) and centered; each battle picks
    two different players uniformly and samples the winner from the BT model.
    Returns ``(true_scores, winners, losers)``.
    """
    if n_players < 2 or n_battles < 1:
        raise ValueError(f"need at least 2 players and 1 battle, got {n_players} players and {n_battles} battles")
    rng = np.random.default_rng(seed)
    true_scores = center_scores(rng.normal(0.0, strength_std, n_players))
    a = rng.integers(0, n_players, n_battles)
    b = (a + rng.integers(1, n_players, n_battles)) % n_players  # uniform over the other players
    a_wins = rng.random(n_battles) < win_probability(true_scores[a], true_scores[b])
    return true_scores, np.where(a_wins, a, b), np.where(a_wins, b, a)


def bootstrap_scores(winners, losers, n_players: int, *, n_resamples: int = 200, l2: float = 0.0, seed: int = 0) -> np.ndarray:
    """BT scores refitted on ``n_resamples`` bootstrap resamples of the comparisons.

    Resampling with replacement is expressed as multinomial counts per
    comparison, so all resamples are fitted in one batched L-BFGS run. Returns
    shape ``(n_resamples, n_players)``; percentiles give confidence intervals.
    """
    winners, losers = check_comparisons(winners, losers, n_players)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(winners.size, np.full(winners.size, 1.0 / winners.size), size=n_resamples)
    return fit_bradley_terry(winners, losers, n_players, l2=l2, weights=counts.astype(float))


def best_possible_nll(winners, losers) -> float:
    """Mean NLL of the saturated model: every ordered pair gets its own win rate.

    No model of pairwise outcomes can do better on these data; the gap between a
    BT fit and this number is what BT cannot express (for example a cycle).
    """
    winners, losers = np.asarray(winners), np.asarray(losers)
    pairs = np.stack([np.minimum(winners, losers), np.maximum(winners, losers)], axis=1)
    _, pair_index = np.unique(pairs, axis=0, return_inverse=True)
    first_won = (winners < losers).astype(float)
    total = np.bincount(pair_index)
    rate = np.bincount(pair_index, weights=first_won) / total
    p = np.where(first_won == 1, rate[pair_index], 1 - rate[pair_index])
    return float(-np.log(p).mean())


def mean_nll(scores, winners, losers) -> float:
    """Mean BT negative log-likelihood per comparison for given scores."""
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    return float(negative_log_likelihood(scores, winners, losers)) / len(winners)
