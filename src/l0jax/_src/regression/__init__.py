"""Sparse L0 regression: linear and logistic models, compiled training, lambda paths.

Layout (one idea per file):

* ``design``     -- the seam that turns X (dense or scipy sparse) into a jit argument with ``matvec``.
* ``objective``  -- pure functions: parameters, gated linear predictor, data losses, L0 objective.
* ``train``      -- the compiled epoch loop (``lax.scan`` in chunks), single fit and vmapped path.
* ``estimators`` -- ``SparseL0Linear`` / ``SparseL0Logistic``, l0-python's object API.
* ``path``       -- ``l0_path`` (a whole lambda grid in one compile) and ``select_lambda``.
"""
