"""Type aliases shared by the layers of the library (the option strings of the pure core).

``hard_concrete.EVAL_RULES`` and ``hard_concrete.NOISE_KINDS`` hold the same choices as runtime
tuples; a test keeps the two in step.
"""

from __future__ import annotations

from typing import Literal

EvalRule = Literal["median", "paper"]
"""The deterministic gate of eval mode: the noise median or the paper's eq. 13."""

NoiseKind = Literal["random", "hash"]
"""How the uniform noise of the gates is drawn: from a key, or hashed from a counter."""
