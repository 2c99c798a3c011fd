"""Exact small-sample p-values: Friedman (k periods, n subjects) and Spearman's rank correlation.

Contract: each function takes plain arrays and returns ``(statistic, p, method)`` where
``method`` says whether the p is exact (complete enumeration of the permutation distribution)
or an approximation (above the size limit), so callers can state it.

* :func:`friedman_exact` — the within-subject permutation null of the Friedman test: each
  subject's ranks (midranks for ties) are equally likely in every one of the k! orders. The
  statistic is monotone in the sum of squared rank sums, so the null distribution of the rank
  sum vector is built by dynamic programming over subjects (doubled midranks keep it integer);
  ``p = P(Q >= Q_obs)``. With ties the tie-corrected statistic is a constant multiple of the
  uncorrected one, so p does not depend on the correction.
* :func:`spearman_exact` — all n! pairings of the two rank vectors (midranks for ties) up to
  ``max_exact`` subjects; two-sided ``p = P(|rho| >= |rho_obs|)``, which without ties equals R's
  ``cor.test(method = "spearman", exact = TRUE)``.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["friedman_exact", "spearman_exact", "MAX_EXACT_SPEARMAN", "MAX_EXACT_FRIEDMAN"]

#: n above which Spearman's p comes from the t approximation (10! = 3.6 million pairings).
MAX_EXACT_SPEARMAN = 10
#: subjects × periods above which Friedman's p comes from the chi-square approximation.
MAX_EXACT_FRIEDMAN = 60
_REL = 1e-9  # statistics this close count as equal (float noise, not a difference)


def _snap(x: np.ndarray) -> np.ndarray:
    """Values equal to 12 significant digits made equal: means of identical values (e.g. a
    censoring level) can differ in the last bits, which must not break their tie."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    scale = float(np.max(np.abs(x))) if x.size else 0.0
    return np.round(x / scale, 12) * scale if scale > 0 else x


def friedman_exact(values: np.ndarray) -> tuple[float, float, str]:
    """Friedman test of ``values`` (subjects × periods, no NaN) with its exact permutation p.

    Returns
    -------
    tuple
        ``(chi-square statistic with tie correction, p, method)``; ``method`` is ``"exact"`` or
        ``"chi-square approximation"`` (more than :data:`MAX_EXACT_FRIEDMAN` subjects or more
        than 6 periods).
    """
    import numpy as np
    from scipy import stats

    x = _snap(np.asarray(values, dtype=float))
    n, k = x.shape
    ranks2 = np.vstack([np.round(2 * stats.rankdata(row)).astype(int) for row in x])  # 2 × midranks
    ties = sum(float(np.sum(c ** 3 - c)) for row in x
               for c in [np.unique(row, return_counts=True)[1].astype(float)])
    correction = 1.0 - ties / (n * k * (k * k - 1))
    rsum = ranks2.sum(axis=0) / 2.0
    if correction <= 0:
        return math.nan, 1.0, "exact"
    q = (12.0 / (n * k * (k + 1)) * float(np.sum(rsum ** 2)) - 3.0 * n * (k + 1)) / correction
    if n > MAX_EXACT_FRIEDMAN or k > 6:
        return q, float(stats.chi2.sf(q, k - 1)), "chi-square approximation"
    # The null distribution depends only on each subject's multiset of ranks (every order is
    # enumerated), so features sharing the tie pattern (without ties: all) share it.
    squares, at_least = _rank_sum_distribution(
        tuple(sorted(tuple(sorted(row)) for row in ranks2.tolist())))
    observed = int(np.sum(ranks2.sum(axis=0) ** 2))
    total = math.factorial(k) ** n
    tol = max(1, observed) * _REL
    hit = at_least[bisect.bisect_left(squares, observed - tol)]
    return q, hit / total, "exact"


@functools.lru_cache(maxsize=64)
def _rank_sum_distribution(rows: tuple[tuple[int, ...], ...]) -> tuple[list[int], list[int]]:
    """Null distribution of the sum of squared (doubled) rank sums over all within-subject
    orders of ``rows``: its distinct values ascending, and for each how many orders reach at
    least it (one more entry, 0, at the end).

    Built by dynamic programming over the rank sum vector one subject at a time (exact
    integers; the subjects' order does not change the result). Callers must not modify the
    returned lists (they are cached).
    """
    k = len(rows[0])
    dist: dict[tuple[int, ...], int] = {tuple([0] * k): 1}
    for row in rows:
        orders: dict[tuple[int, ...], int] = {}
        for perm in itertools.permutations(row):
            orders[perm] = orders.get(perm, 0) + 1
        new: dict[tuple[int, ...], int] = {}
        for state, count in dist.items():
            for perm, mult in orders.items():
                key = tuple(s + p for s, p in zip(state, perm))
                new[key] = new.get(key, 0) + count * mult
        dist = new
    by_square: dict[int, int] = {}
    for state, count in dist.items():
        sq = sum(v * v for v in state)
        by_square[sq] = by_square.get(sq, 0) + count
    squares = sorted(by_square)
    at_least = [0] * (len(squares) + 1)
    for i in range(len(squares) - 1, -1, -1):
        at_least[i] = at_least[i + 1] + by_square[squares[i]]
    return squares, at_least


def spearman_exact(x: np.ndarray, y: np.ndarray, *, max_exact: int = MAX_EXACT_SPEARMAN
                   ) -> tuple[float, float, str]:
    """Spearman's rho of paired ``x, y`` (no NaN) with its exact two-sided permutation p.

    Returns
    -------
    tuple
        ``(rho, p, method)``; NaN rho/p when either variable is constant. ``method`` is
        ``"exact"`` (n <= ``max_exact``) or ``"t approximation"``.
    """
    import numpy as np
    from scipy import stats

    x, y = _snap(np.asarray(x, dtype=float)), _snap(np.asarray(y, dtype=float))
    n = x.size
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if n < 3 or np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return math.nan, math.nan, ""
    rho = float(np.corrcoef(rx, ry)[0, 1])
    if n > max_exact:
        return rho, float(stats.spearmanr(x, y).pvalue), "t approximation"
    cx, cy = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float(cx @ cx) * float(cy @ cy))
    hits, total = 0, 0
    for perms in _permutation_blocks(n):  # blocks keep memory flat at n = 10 (3.6 million)
        stat = np.abs(cy[perms] @ cx) / denom
        hits += int(np.count_nonzero(stat >= abs(rho) - _REL))
        total += perms.shape[0]
    p = hits / total
    return rho, min(1.0, p), "exact"


@functools.lru_cache(maxsize=4)
def _permutations(n: int) -> np.ndarray:
    import numpy as np

    return np.array(list(itertools.permutations(range(n))), dtype=np.int8)


def _permutation_blocks(n: int, chunk: int = 400_000) -> Iterator[np.ndarray]:
    """All permutations of ``range(n)`` as integer arrays (cached up to n = 9)."""
    import numpy as np

    if n <= 9:
        yield _permutations(n)
        return
    source = itertools.permutations(range(n))
    while True:
        block = list(itertools.islice(source, chunk))
        if not block:
            return
        yield np.asarray(block, dtype=np.int8)
