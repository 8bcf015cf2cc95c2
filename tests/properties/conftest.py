"""Hypothesis profiles for the property tests: ``ci`` (the default, fast) and ``fuzz`` (``make fuzz``).

``L0JAX_HYPOTHESIS_PROFILE=fuzz`` selects the long profile. The default profile is derandomized, so a
CI run draws the same examples on every machine and a failure reproduces; the long profile draws new
examples on each run and keeps the failing ones in ``.hypothesis/`` to replay them first next time.
No deadline in either: the first example of a shape compiles, which takes far longer than the rest.
"""

import os

from hypothesis import HealthCheck, settings

_SLOW_DRAWS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "ci",
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=_SLOW_DRAWS,
)
settings.register_profile(
    "fuzz",
    max_examples=400,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_DRAWS,
)
settings.load_profile(os.environ.get("L0JAX_HYPOTHESIS_PROFILE", "ci"))
