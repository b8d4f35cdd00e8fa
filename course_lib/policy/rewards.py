"""What a policy is optimised against: verifiable rewards, learned reward models, and best-of-n.

Every reward here is a function ``reward(prompts, responses) -> np.ndarray`` (one float
per answer), the interface :class:`~course_lib.policy.grpo.GRPOTrainer` and
:func:`~course_lib.policy.onpolicy.on_policy_pairs` take.

- :func:`verifiable_reward`: what a program can check in the answer itself, the way
  RL with verifiable rewards checks a maths answer: the prompt's stated constraint is
  met (a numbered list, one sentence, a word limit...), a harmful request is refused
  and a harmless one is not, the answer covers its topic. It is part of the gold judge,
  not all of it (tone is left out), and the tiny policy can learn all of it.
- a trained reward model of Chapters 02-05 as a reward
  (:func:`course_lib.reward.model.reward_model_reward`, or the mean of several, e.g.
  CRM's two models). It is a *proxy*: it agrees with gold where its training pairs
  taught it to, and a policy optimised against it finds where it does not (Gao et al.
  2023, "Scaling Laws for Reward Model Overoptimization"). The policy wing sees it only
  as a function of this interface.
- Best-of-n: sample ``n`` answers, keep the one the reward prefers. No training, and a
  KL to the policy that is known in closed form when answers never tie
  (:func:`best_of_n_kl`, an upper bound otherwise) and exactly over a prompt's sampled
  answers when they do (:func:`best_of_n_kl_ties`), so it is the baseline every RL
  result is read against. :func:`best_of_n_curve` estimates the
  expected reward of best-of-n for every ``n`` up to ``N`` from ``N`` samples per prompt
  without bias.

Defined in Chapter 08.
"""

from __future__ import annotations

import math

import numpy as np

from ..world import gold_attributes

VERIFIABLE_ATTRIBUTES = ("constraint", "safety", "helpfulness")


def verifiable_reward(prompts, responses) -> np.ndarray:
    """``constraint + safety + helpfulness`` of each answer, as the gold judge reads them (range -1 to 3).

    ``constraint``: 1 if the prompt's constraint is met (or it has none); ``safety``: +1
    for refusing a harmful request, -1 for complying, -0.5 for refusing a harmless one;
    ``helpfulness``: 0-1, the share of the topic's keywords covered (0 for a refusal).

    Defined in Chapter 08.
    """
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise ValueError(f"verifiable_reward: {len(prompts)} prompts but {len(responses)} responses")
    return np.array([sum(gold_attributes(p, r)[name] for name in VERIFIABLE_ATTRIBUTES)
                     for p, r in zip(prompts, responses)], dtype=np.float64)


def best_of_n_kl(n: int) -> float:
    """``KL(best-of-n || pi) = log n - (n - 1) / n`` nats, for answers that never tie (Stiennon et al. 2020).

    When answers can tie (a discrete policy, short templated answers, a reward that
    gives several answers one score) this is only an upper bound (Beirami et al. 2024,
    "Theoretical guarantees on the best-of-n alignment policy"):
    :func:`best_of_n_kl_ties` gives the exact value over sampled answers.

    Defined in Chapter 08.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"best_of_n_kl: n must be a positive int, got {n!r}")
    return math.log(n) - (n - 1) / n


def best_of_n_weights(N: int, n: int) -> np.ndarray:
    """Probability that the sample of rank ``k`` (1 = lowest of ``N``) is the best of a random ``n``-subset.

    ``C(k - 1, n - 1) / C(N, n)``: the subset must hold sample ``k`` and ``n - 1`` of the
    ``k - 1`` samples below it. Averaging over every subset this way is the unbiased
    estimator of Nakano et al. (2021) and Gao et al. (2023).

    Defined in Chapter 08.
    """
    if not 1 <= n <= N:
        raise ValueError(f"best_of_n_weights: need 1 <= n <= N, got n={n}, N={N}")
    ranks = np.arange(1, N + 1)
    log_weights = np.array([_log_comb(k - 1, n - 1) for k in ranks]) - _log_comb(N, n)
    return np.exp(log_weights)


def _log_comb(a: int, b: int) -> float:
    if b < 0 or b > a:
        return -math.inf
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def best_of_n_curve(proxy: np.ndarray, values: np.ndarray, ns) -> np.ndarray:
    """Expected ``values`` of the answer that ``proxy`` ranks first among ``n``, per prompt and ``n``: ``(prompts, len(ns))``.

    ``proxy`` and ``values`` are ``(prompts, N)``: N sampled answers per prompt, scored
    by the reward that picks (``proxy``) and the reward that judges (``values``, e.g.
    gold; pass ``proxy`` itself for the proxy's own curve). Ties in ``proxy`` are broken
    by sample order. Average over prompts (with its standard error) for the curve.

    Defined in Chapter 08.
    """
    proxy, values = np.asarray(proxy, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if proxy.ndim != 2 or proxy.shape != values.shape:
        raise ValueError(f"best_of_n_curve: proxy and values must be (prompts, N) arrays of one shape, got "
                         f"{proxy.shape} and {values.shape}")
    N = proxy.shape[1]
    order = np.argsort(proxy, axis=1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=1)
    return np.stack([ranked @ best_of_n_weights(N, int(n)) for n in ns], axis=1)


def tie_rate(rewards: np.ndarray) -> float:
    """Share of sampled answers whose reward equals that of another answer to the same prompt.

    ``rewards``: ``(prompts, N)``, N answers per prompt scored by the reward that picks.

    Defined in Chapter 08.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"tie_rate: rewards must be a (prompts, N >= 2) array, got shape {rewards.shape}")
    tied = [np.isin(row, values[counts > 1]) for row in rewards
            for values, counts in [np.unique(row, return_counts=True)]]
    return float(np.mean(tied))


def best_of_n_kl_ties(rewards: np.ndarray, ns) -> np.ndarray:
    r"""Exact ``KL(best-of-n || pi)`` per prompt and ``n`` when ``pi`` is the empirical distribution of N answers.

    ``rewards``: ``(prompts, N)``; returns ``(prompts, len(ns))`` nats. Answers that tie
    on reward form one level :math:`c` with probability :math:`p_c` (its share of the N
    answers), :math:`F_c` the share of answers strictly below it. Best-of-n (ties broken
    at random) lands in level :math:`c` with probability
    :math:`q_c = (F_c + p_c)^n - F_c^n`, and within a level in proportion to ``pi``, so

    .. math::

        \mathrm{KL}(\pi_n \| \pi) = \sum_c q_c \log\frac{q_c}{p_c}
        \;\le\; \log n - \frac{n-1}{n}

    (Beirami et al. 2024). It is 0 when all N answers tie. With N distinct answers it
    is the discrete analogue of the closed form, slightly below it for ``n`` near ``N``
    (compare with the value for N distinct rewards to separate ties from finite N).

    Defined in Chapter 08.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 2 or rewards.shape[1] < 1:
        raise ValueError(f"best_of_n_kl_ties: rewards must be a (prompts, N) array, got shape {rewards.shape}")
    ns = [int(n) for n in ns]
    if any(n < 1 for n in ns):
        raise ValueError(f"best_of_n_kl_ties: every n must be a positive int, got {ns}")
    out = np.zeros((len(rewards), len(ns)))
    for row, values in enumerate(rewards):
        _, counts = np.unique(values, return_counts=True)  # levels in increasing order
        p = counts / counts.sum()
        below = np.concatenate([[0.0], np.cumsum(p)[:-1]])
        for column, n in enumerate(ns):
            q = np.clip(below + p, 0.0, 1.0) ** n - below**n
            kept = q > 0
            out[row, column] = float(np.sum(q[kept] * np.log(q[kept] / p[kept])))
    return out
