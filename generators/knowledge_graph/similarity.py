"""The k nearest neighbours of every chunk by cosine, computed in bounded blocks.

Similarities are computed 1,024 rows (fewer for a very large corpus) against all at a
time, keeping the top ``k`` with ``np.argpartition``: nothing is quadratic in memory.
"""

from __future__ import annotations

import numpy as np

_SIMILARITY_CELLS = 1 << 24  # similarities per block: 64 MiB, + 128 MiB of argpartition indices
_SIMILARITY_ROWS = 1024


# ----------------------------------------------------------------------------- similarity


def nearest_neighbours(
    embeddings: np.ndarray,
    *,
    top_k: int = 5,
    threshold: float = 0.6,
    block_rows: int | None = None,
) -> list[tuple[int, int, float]]:
    """``(i, j, cosine)`` for each row ``i``'s ``top_k`` most similar rows ``j != i`` with
    ``cosine >= threshold``, most similar first, then by ``j``; sorted by ``i``. (Which
    of several rows tied at the k-th place is kept is ``np.argpartition``'s choice: the
    same for the same input.)

    Rows must be L2-normalised. ``block_rows`` rows are compared with all at a time
    (default 1,024, fewer when the corpus is so large that a block would pass 16M
    similarities), so memory is linear in the number of rows.
    """
    n = len(embeddings)
    k = min(top_k, n - 1)
    if k <= 0:
        return []
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    block = block_rows or max(1, min(_SIMILARITY_ROWS, _SIMILARITY_CELLS // n))
    cutoff = np.float32(threshold)
    links: list[tuple[int, int, float]] = []
    for start in range(0, n, block):
        scores = matrix[start : start + block] @ matrix.T
        rows = np.arange(len(scores))
        scores[rows, start + rows] = -np.inf  # never itself
        if k < n - 1:
            top = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        else:
            top = np.broadcast_to(np.arange(n), scores.shape)
        values = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -values), axis=-1)
        top = np.take_along_axis(top, order, axis=1)
        values = np.take_along_axis(values, order, axis=1)
        for row, (targets, cosines) in enumerate(zip(top, values, strict=True)):
            keep = cosines >= cutoff
            links.extend(
                zip(
                    [start + row] * int(keep.sum()),
                    targets[keep].tolist(),
                    cosines[keep].tolist(),
                    strict=True,
                )
            )
    return links
