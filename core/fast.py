"""The batched engine (placeholder: delegates to the reference until the vector passes land)."""

from __future__ import annotations

import numpy as np

from core import reference
from core.kernel import Kernel


def run_batch(k: Kernel, batch: np.ndarray) -> None:
    reference.run_batch(k, batch)
