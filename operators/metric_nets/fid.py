"""Fréchet Inception Distance from feature statistics that shards compute apart and merge exactly.

``FeatureStatistics`` keeps the count, the sum and the sum of outer products of the features in
float64. Adding two of them adds these three numbers, so statistics merged from shards are those of
one pass over all features (to float64 round-off in the order of the additions), and the mean and the
covariance are read from them at the end.

``frechet_distance`` computes ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)) in float64. The
trace of the square root uses only symmetric eigen-decompositions: S1 S2 is similar to the symmetric
positive semi-definite M = S1^(1/2) S2 S1^(1/2), so Tr((S1 S2)^(1/2)) is the sum of the square roots
of M's eigenvalues. Unlike a general matrix square root of the non-symmetric S1 S2 (scipy's sqrtm,
which pytorch-fid uses), this has no complex round-off to discard and stays defined when the
covariances are singular, as they are with fewer samples than feature dimensions; eigenvalues that
round-off makes slightly negative are taken as 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch


@dataclass
class FeatureStatistics:
    """Sufficient statistics of a set of feature vectors [N, D]: count, sum [D], sum of outer products [D, D]."""

    count: int
    total: torch.Tensor
    outer: torch.Tensor

    @classmethod
    def zeros(cls, dim: int) -> FeatureStatistics:
        return cls(0, torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dim, dtype=torch.float64))

    @classmethod
    def of(cls, features: torch.Tensor) -> FeatureStatistics:
        if features.ndim != 2:
            raise ValueError(f"features must be [N, D], got {tuple(features.shape)}")
        stats = cls.zeros(features.shape[1])
        stats.update(features)
        return stats

    @property
    def dim(self) -> int:
        return self.total.shape[0]

    def update(self, features: torch.Tensor) -> None:
        """Add a batch of feature vectors [N, D] (any float dtype or device) in place."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must be [N, {self.dim}], got {tuple(features.shape)}")
        f = features.detach().to("cpu", torch.float64)
        self.count += f.shape[0]
        self.total += f.sum(0)
        self.outer += f.T @ f

    def __add__(self, other: FeatureStatistics) -> FeatureStatistics:
        if not isinstance(other, FeatureStatistics):
            return NotImplemented
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of {self.dim}-d and {other.dim}-d features")
        return FeatureStatistics(self.count + other.count, self.total + other.total, self.outer + other.outer)

    def mean(self) -> torch.Tensor:
        if self.count < 1:
            raise ValueError("the mean of no features is undefined")
        return self.total / self.count

    def covariance(self) -> torch.Tensor:
        """Unbiased sample covariance (divided by N - 1, as numpy.cov and pytorch-fid)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        mean = self.mean()
        cov = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return (cov + cov.T) / 2

    def as_dict(self) -> dict[str, Any]:
        """{'count': int, 'sum': float64 [D], 'outer': float64 [D, D]}, for storing beside a shard."""
        return {"count": self.count, "sum": self.total.clone(), "outer": self.outer.clone()}

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any], source: str = "feature statistics") -> FeatureStatistics:
        """The inverse of ``as_dict``; ``source`` names what was read in errors."""
        missing = [k for k in ("count", "sum", "outer") if k not in stored]
        if missing:
            raise ValueError(f"{source}: missing field(s) {', '.join(missing)}")
        count = stored["count"]
        count = count.item() if isinstance(count, torch.Tensor) and count.numel() == 1 else count
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{source}: 'count' must be a non-negative integer, got {count!r}")
        total = torch.as_tensor(stored["sum"], dtype=torch.float64)
        outer = torch.as_tensor(stored["outer"], dtype=torch.float64)
        if total.ndim != 1 or outer.shape != (total.shape[0], total.shape[0]):
            raise ValueError(
                f"{source}: 'sum' must be [D] and 'outer' [D, D], got {list(total.shape)} and {list(outer.shape)}"
            )
        return cls(count, total.clone(), outer.clone())


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """Tr((S1 S2)^(1/2)) of two symmetric positive semi-definite matrices, via M = S1^(1/2) S2 S1^(1/2)."""
    root = _psd_sqrt(sigma1)
    m = root @ sigma2 @ root
    return torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    given = (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2))
    values = {name: torch.as_tensor(v, dtype=torch.float64).cpu() for name, v in given}
    dim = values["mu1"].shape[-1] if values["mu1"].ndim else 0
    shapes = {name: list(v.shape) for name, v in values.items()}
    if list(shapes.values()) != [[dim], [dim, dim], [dim], [dim, dim]]:
        raise ValueError(f"Fréchet distance needs mu [D] and sigma [D, D] for both sets, got shapes {shapes}")
    for name, value in values.items():
        if not torch.isfinite(value).all():
            raise ValueError(f"Fréchet distance: {name} has non-finite values")
    mu1, sigma1, mu2, sigma2 = values.values()
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    difference = mu1 - mu2
    distance = difference @ difference + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt_product(sigma1, sigma2)
    # A squared distance: only round-off can take it below zero.
    return max(float(distance), 0.0)


def fid_from_statistics(a: FeatureStatistics, b: FeatureStatistics) -> float:
    return frechet_distance(a.mean(), a.covariance(), b.mean(), b.covariance())


def fids_from_statistics(reference: FeatureStatistics, others: list[FeatureStatistics]) -> list[float]:
    """``fid_from_statistics(reference, other)`` for each of ``others``, with the square root of the
    reference's covariance computed once (the costly part: an eigen-decomposition of a 2048x2048 matrix).
    A set whose features are not all finite gets NaN."""
    mu1, sigma1 = reference.mean(), reference.covariance()
    if not (torch.isfinite(mu1).all() and torch.isfinite(sigma1).all()):
        return [float("nan")] * len(others)
    root = _psd_sqrt(sigma1)
    distances = []
    for other in others:
        mu2, sigma2 = other.mean(), other.covariance()
        if not (torch.isfinite(mu2).all() and torch.isfinite(sigma2).all()):
            distances.append(float("nan"))
            continue
        m = root @ sigma2 @ root
        trace_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
        difference = mu1 - mu2
        distance = difference @ difference + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
        distances.append(max(float(distance), 0.0))  # a squared distance: only round-off takes it below zero
    return distances
