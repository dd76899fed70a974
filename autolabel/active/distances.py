"""Euclidean distances for diversity selection at pool scale, without an N x M x D array (issue 21).

The values are those of the original formula, ``np.linalg.norm(x - c)`` in float64, bit for bit; only
where they are computed changes. A fast approximate pass (matrix products ``|x|^2 + |c|^2 - 2 x.c`` in
float32 on the CPU, float64 on a GPU, in row chunks) finds which (point, center) pairs can matter, with a
rigorous bound on its rounding error; the exact float64 norm is then computed for those pairs only. So
k-center greedy makes the same picks as the original code, in far less time and memory:

- nearest-center distance of every point to M centers: chunks of rows x M approximate squared distances;
  per row, only the centers within twice the error bound of the approximate minimum are measured exactly;
- greedy update with a new center: one matrix-vector product; only rows whose distance may shrink (the
  approximate squared distance, less the bound, below the current squared distance) are measured exactly.
"""

from __future__ import annotations

import numpy as np
import torch

CHUNK_BYTES = 64 << 20  # about this much per temporary (rows x D float64, rows x M approximate block)


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


class PointDistances:
    """Distances from a fixed point set ``x`` (N, D) to centers, equal to ``np.linalg.norm`` in float64.

    The approximate pass runs on ``device`` (a CUDA device when one is given: float64 there, so TF32
    settings cannot widen its error; float32 matrix products on the CPU)."""

    def __init__(self, x: np.ndarray, device: str | torch.device | None = None):
        self.x = np.ascontiguousarray(x)  # the original values (float32 or float64); exact passes read these
        self.n, self.dim = self.x.shape
        self.rows = max(1, CHUNK_BYTES // (8 * max(self.dim, 1)))
        self.device = _device(device)
        self.dtype = torch.float64 if self.device.type == "cuda" else torch.float32
        self.xa = torch.as_tensor(self.x).to(self.device, self.dtype).contiguous()  # no copy for float32 on the CPU
        self.xn = (
            (self.xa.double() ** 2).sum(1) if self.device.type == "cuda" else torch.from_numpy(self._sqnorm(self.x))
        )
        self.xn = self.xn.to(self.device, self.dtype)
        # |fl(d2) - d2| <= bound * (|x|^2 + |c|^2): gamma_D for each of the dot product and the two norms, a
        # few roundings for the sums and the cast of float64 inputs to the approximate dtype (generous, rigorous)
        self.bound = (2 * self.dim + 16) * torch.finfo(self.dtype).eps

    def _sqnorm(self, x: np.ndarray) -> np.ndarray:
        out = np.empty(len(x))
        for a in range(0, len(x), self.rows):
            b = min(len(x), a + self.rows)
            out[a:b] = np.einsum("ij,ij->i", x[a:b].astype(np.float64), x[a:b].astype(np.float64))
        return out

    def exact(self, rows: np.ndarray, center: np.ndarray) -> np.ndarray:
        """float64 ``norm(x[rows] - center)``, computed as the original code did, chunked."""
        c = np.asarray(center, dtype=np.float64)
        out = np.empty(len(rows))
        for a in range(0, len(rows), self.rows):
            r = rows[a : a + self.rows]
            out[a : a + len(r)] = np.linalg.norm(self.x[r].astype(np.float64) - c, axis=1)
        return out

    def exact_pairs(self, rows: np.ndarray, centers: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """float64 ``norm(x[rows[i]] - centers[cols[i]])`` for each pair i, chunked."""
        out = np.empty(len(rows))
        for a in range(0, len(rows), self.rows):
            r, c = rows[a : a + self.rows], cols[a : a + self.rows]
            out[a : a + len(r)] = np.linalg.norm(self.x[r].astype(np.float64) - centers[c].astype(np.float64), axis=1)
        return out

    def to_mean(self) -> np.ndarray:
        """Distance of every point to the points' mean (float64)."""
        mean = self.x.mean(0, dtype=np.float64)
        return self.exact(np.arange(self.n), mean)

    def nearest(self, centers: np.ndarray) -> np.ndarray:
        """(N,) distance of every point to its nearest center (M, D): ``norm(x[:, None] - c[None], axis=2).min(1)``."""
        centers = np.ascontiguousarray(centers)
        m = len(centers)
        if m == 0:
            return np.full(self.n, np.inf)
        ca = torch.as_tensor(centers).to(self.device, self.dtype)
        cn = torch.from_numpy(self._sqnorm(centers)).to(self.device, self.dtype)
        out = np.empty(self.n)
        step = max(1, min(self.rows, CHUNK_BYTES // (8 * m)))
        for a in range(0, self.n, step):
            b = min(self.n, a + step)
            xn = self.xn[a:b, None]
            d2 = xn + cn[None] - 2 * (self.xa[a:b] @ ca.T)
            err = self.bound * (xn + cn[None])
            upper = (d2 + err).min(1, keepdim=True).values
            rr, cc = torch.nonzero(d2 - err <= upper, as_tuple=True)  # every pair that can be the nearest
            rr, cc = rr.cpu().numpy(), cc.cpu().numpy()
            d = self.exact_pairs(rr + a, centers, cc)
            best = np.full(b - a, np.inf)
            np.minimum.at(best, rr, d)
            out[a:b] = best
        return out

    def shrink(self, d: np.ndarray, center: int) -> None:
        """In place: ``d = minimum(d, norm(x - x[center]))``, measuring exactly only the rows it can change."""
        c2 = self.xn[center]
        d2 = self.xn + c2 - 2 * (self.xa @ self.xa[center])
        lower = (d2 - self.bound * (self.xn + c2)).cpu().numpy()
        rows = np.flatnonzero((lower <= d * d) & (d > 0))  # d = -inf marks picks, 0 cannot shrink
        if len(rows):
            d[rows] = np.minimum(d[rows], self.exact(rows, self.x[center]))
