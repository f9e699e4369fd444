"""Small model classes shared by tests (captured by value, since this module is not an installed package)."""

from __future__ import annotations

import numpy as np


class FragileModel:
    """Raises on negative input, like a model with an assertion in its feature code."""

    def predict(self, rows):
        rows = np.asarray(rows)
        if (rows < 0).any():
            raise ValueError("negative values are not supported")
        return rows.sum(axis=1)
