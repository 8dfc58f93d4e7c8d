"""Distributions per (sex x mortality) cell that reproduce published margins.

The paper prints each variable twice: stratified by sex (Table 1) and by all-cause mortality
(Table 2). The synthetic cohort needs the joint distribution in the four cells
``(male, alive), (male, death), (female, alive), (female, death)`` such that both sets of margins
hold at once. This module does that in two ways:

* **categorical variables** (binary flags, stress type, ECG response): iterative proportional
  fitting (IPF) of the sex x death x level table to the two printed margins, which gives the
  maximum-entropy table without a three-way interaction (Deming & Stephan 1940);
* **continuous variables**: each cell is a *two-piece normal* in a transformed scale (identity,
  log, log with offset; optionally with a point mass at zero for the coronary calcium score) whose
  nine-plus parameters are fitted by least squares to every printed quantile of every margin
  (median, Q1, Q3 of all, male, female, death, alive, plus extra targets such as the proportion
  with TPD < 5%). Residuals are scaled by the calibration tolerance, so the fit spends its freedom
  where the report would fail.

References
----------
Deming WE, Stephan FF. On a least squares adjustment of a sampled frequency table when the
expected marginal totals are known. Ann Math Stat 1940;11:427-444.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special

logger = logging.getLogger(__name__)

CELLS = (("male", 0), ("male", 1), ("female", 0), ("female", 1))
GROUP_CELLS = {
    "all": (0, 1, 2, 3),
    "male": (0, 1),
    "female": (2, 3),
    "alive": (0, 2),
    "death": (1, 3),
}
_Z75 = special.ndtri(0.75)


# -- categorical ----------------------------------------------------------------------------------
def ipf_sex_death(
    cell_n: np.ndarray, by_sex: np.ndarray, by_death: np.ndarray, tol: float = 1e-10, max_iter: int = 1000
) -> np.ndarray:
    """Fit a sex x death x level count table to its printed margins by IPF.

    Parameters
    ----------
    cell_n : array, shape (2, 2)
        Patients per (sex, death) cell; sex index 0 = male, 1 = female; death index 0 = alive.
    by_sex : array, shape (2, K)
        Counts per level in males and females (Table 1).
    by_death : array, shape (2, K)
        Counts per level in survivors and deaths (Table 2).

    Returns
    -------
    array, shape (2, 2, K)
        Cell probabilities ``P(level | sex, death)`` (rows sum to 1).
    """
    cell_n = np.asarray(cell_n, float)
    by_sex = np.asarray(by_sex, float)
    by_death = np.asarray(by_death, float)
    k = by_sex.shape[1]
    # Margins must describe the same patients: rescale both to the cell totals they summarise.
    by_sex = by_sex / by_sex.sum(axis=1, keepdims=True) * cell_n.sum(axis=1, keepdims=True)
    by_death = by_death / by_death.sum(axis=1, keepdims=True) * cell_n.sum(axis=0)[:, None]
    table = np.repeat(cell_n[:, :, None], k, axis=2) / k
    for _ in range(max_iter):
        prev = table.copy()
        table *= (by_sex / np.maximum(table.sum(axis=1), 1e-300))[:, None, :]
        table *= (by_death / np.maximum(table.sum(axis=0), 1e-300))[None, :, :]
        table *= (cell_n / np.maximum(table.sum(axis=2), 1e-300))[:, :, None]
        if np.max(np.abs(table - prev)) < tol:
            break
    return table / table.sum(axis=2, keepdims=True)


def allocate_counts(n: int, probs: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``n`` closest to ``n * probs`` (largest-remainder rounding)."""
    probs = np.asarray(probs, float)
    raw = n * probs / probs.sum()
    counts = np.floor(raw).astype(int)
    short = n - counts.sum()
    if short > 0:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


# -- continuous -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One published number a fitted variable must reproduce.

    ``kind`` is ``"quantile"`` (``level`` in (0, 1)), ``"cdf"`` (proportion at or below ``at``,
    compared in proportion units) or ``"cond_quantile"`` (quantile ``level`` among values >= ``at``).
    """

    group: str
    kind: str
    value: float
    level: float = 0.5
    at: float = 0.0
    tol: float = 1.0
    weight: float = 1.0


@dataclass
class ContinuousModel:
    """Two-piece normal per cell on a transformed scale, optionally zero-inflated.

    ``params`` holds, per cell, (median, log left scale, log right scale) on the transformed scale
    and, when ``zero_inflated``, a logit of the cell's probability of an exact zero.
    """

    transform: str = "identity"
    offset: float = 0.0
    zero_inflated: bool = False
    lower: float = -np.inf
    upper: float = np.inf
    params: np.ndarray = field(default_factory=lambda: np.zeros(12))

    # transforms ------------------------------------------------------------------------------
    def forward(self, x):
        x = np.asarray(x, float)
        if self.transform == "identity":
            return x
        if self.transform == "log":
            return np.log(np.maximum(x + self.offset, 1e-12))
        raise ValueError(f"unknown transform {self.transform!r}; allowed: 'identity', 'log'")

    def inverse(self, y):
        y = np.asarray(y, float)
        if self.transform == "identity":
            return y
        return np.exp(np.minimum(y, 60.0)) - self.offset

    # cells -----------------------------------------------------------------------------------
    def cell_params(self, params=None):
        p = np.asarray(self.params if params is None else params, float)
        m = p[0:12:3]
        # Clipped log-scales keep a wandering optimiser away from degenerate (infinite) cells.
        sl = np.exp(np.clip(p[1:12:3], -8.0, 8.0))
        sr = np.exp(np.clip(p[2:12:3], -8.0, 8.0))
        p0 = special.expit(p[12:16]) if self.zero_inflated else np.zeros(4)
        return m, sl, sr, p0

    def cell_quantile(self, cell: int, u: np.ndarray, params=None) -> np.ndarray:
        """Values of cell ``cell`` at probabilities ``u`` (the generator's inverse CDF)."""
        m, sl, sr, p0 = self.cell_params(params)
        u = np.asarray(u, float)
        if self.zero_inflated:
            pos = u > p0[cell]
            v = np.zeros_like(u)
            up = (u[pos] - p0[cell]) / (1 - p0[cell])
            z = special.ndtri(np.clip(up, 1e-9, 1 - 1e-9))
            y = m[cell] + np.where(z < 0, sl[cell], sr[cell]) * z
            v[pos] = self.inverse(y)
            return np.clip(v, max(self.lower, 0.0), self.upper)
        z = special.ndtri(np.clip(u, 1e-9, 1 - 1e-9))
        y = m[cell] + np.where(z < 0, sl[cell], sr[cell]) * z
        return np.clip(self.inverse(y), self.lower, self.upper)

    def _grid_cdf(self, weights, params, group):
        """Mixture CDF of a group on a grid of the transformed scale."""
        cache = getattr(self, "_grid_cache", None)
        if cache is not None and params is not None and group in cache and cache[group][0] is params:
            return cache[group][1]
        result = self._grid_cdf_uncached(weights, params, group)
        if cache is not None and params is not None:
            cache[group] = (params, result)
        return result

    def _grid_cdf_uncached(self, weights, params, group):
        m, sl, sr, p0 = self.cell_params(params)
        cells = GROUP_CELLS[group]
        lo = min(m[c] - 7 * sl[c] for c in cells)
        hi = max(m[c] + 7 * sr[c] for c in cells)
        y = np.linspace(lo, hi, 1201)
        w = np.array([weights[c] for c in cells], float)
        w = w / w.sum()
        cdf = np.zeros_like(y)
        p0g = 0.0
        for wc, c in zip(w, cells):
            s = np.where(y < m[c], sl[c], sr[c])
            fc = special.ndtr((y - m[c]) / s)
            cdf += wc * (p0[c] + (1 - p0[c]) * fc)
            p0g += wc * p0[c]
        return y, cdf, p0g

    def group_quantile(self, weights, group, level, params=None) -> float:
        y, cdf, p0g = self._grid_cdf(weights, params, group)
        if self.zero_inflated and level <= p0g:
            return 0.0
        return float(np.clip(self.inverse(np.interp(level, cdf, y)), self.lower, self.upper))

    def group_cdf(self, weights, group, at, params=None) -> float:
        y, cdf, p0g = self._grid_cdf(weights, params, group)
        if self.zero_inflated and at <= 0:
            return float(p0g)
        return float(np.interp(self.forward(at), y, cdf, left=p0g, right=1.0))

    # fitting ---------------------------------------------------------------------------------
    def penalties(self, params, strength: float) -> np.ndarray:
        """Pull towards one shape per sex and an additive sex x death structure.

        The margins identify the large survivor cells well but the death cells (6% of patients)
        poorly; without a pull, least squares gives them degenerate shapes (spikes, one-sided
        tails) that a flexible model can then detect. Deviations are measured in units of 25% of a
        scale (log scale 0.25) and of a quarter of the cells' mean scale for medians.
        """
        if strength <= 0:
            return np.zeros(0)
        p = np.asarray(params, float)
        m, lsl, lsr = p[0:12:3], np.clip(p[1:12:3], -8, 8), np.clip(p[2:12:3], -8, 8)
        spread = float(np.mean(np.exp(np.r_[lsl, lsr])))
        out = []
        for alive, dead in ((0, 1), (2, 3)):
            out += [(lsl[dead] - lsl[alive]) / 0.25, (lsr[dead] - lsr[alive]) / 0.25]
        out.append(((m[1] - m[0]) - (m[3] - m[2])) / (0.25 * spread))
        if self.zero_inflated:
            p0 = p[12:16]
            out.append(((p0[1] - p0[0]) - (p0[3] - p0[2])) / 1.0)
        return strength * np.asarray(out)

    def residuals(self, params, weights, targets, strength: float = 0.0):
        return np.r_[self.target_residuals(params, weights, targets), self.penalties(params, strength)]

    def target_residuals(self, params, weights, targets):
        # One grid CDF per group and call: the targets of a group share it.
        grids: dict[str, tuple] = {}
        self._grid_cache = grids
        out = []
        for t in targets:
            if t.kind == "quantile":
                model = self.group_quantile(weights, t.group, t.level, params)
            elif t.kind == "cdf":
                model = self.group_cdf(weights, t.group, t.at, params)
            elif t.kind == "cond_quantile":
                f_at = self.group_cdf(weights, t.group, t.at, params)
                model = self.group_quantile(weights, t.group, f_at + t.level * (1 - f_at), params)
            else:
                raise ValueError(f"unknown target kind {t.kind!r}; allowed: quantile, cdf, cond_quantile")
            out.append(t.weight * (model - t.value) / t.tol)
        return np.asarray(out)

    def initial_params(self, weights, targets) -> np.ndarray:
        """Additive start: cell quantile = sex quantile + death quantile - overall quantile."""

        def q(group, level, default):
            for t in targets:
                if t.kind == "quantile" and t.group == group and abs(t.level - level) < 1e-9:
                    return float(self.forward(max(t.value, 1.0) if self.zero_inflated else t.value))
            return default

        p = []
        for sex, death in CELLS:
            dg = "death" if death else "alive"
            vals = []
            for level in (0.25, 0.5, 0.75):
                overall = q("all", level, 0.0)
                vals.append(q(sex, level, overall) + q(dg, level, overall) - overall)
            med = vals[1]
            left = max((vals[1] - vals[0]) / _Z75, 1e-3)
            right = max((vals[2] - vals[1]) / _Z75, 1e-3)
            p += [med, np.log(left), np.log(right)]
        if self.zero_inflated:
            p += [special.logit(0.3)] * 4
        return np.asarray(p)

    def fit(self, weights, targets, x0=None, strength: float = 0.3) -> "ContinuousModel":
        """Least-squares fit of the cell parameters to ``targets``; returns ``self``.

        ``strength`` weighs :meth:`penalties` against the targets (whose residuals are in units of
        their tolerance); 0 fits the targets alone.
        """
        x0 = self.initial_params(weights, targets) if x0 is None else np.asarray(x0, float)
        res = optimize.least_squares(
            self.residuals, x0, args=(weights, targets, strength), method="trf", max_nfev=300
        )
        self._grid_cache = None
        self.params = res.x
        fitted = self.target_residuals(res.x, weights, targets)
        worst = float(np.max(np.abs(fitted))) if len(fitted) else 0.0
        logger.debug("fitted %d targets, worst scaled residual %.2f", len(targets), worst)
        return self
