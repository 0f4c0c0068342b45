"""Run pytest on one Keras backend: ``python tests/run_backend.py BACKEND [pytest args...]``.

The backend is fixed when Keras is first imported, so it is set here before pytest imports
anything; tox uses this to run the suite once per backend in a single environment.
"""

import os
import sys

if __name__ == "__main__":
    backend, *args = sys.argv[1:] or ["tensorflow"]
    if backend not in ("tensorflow", "jax", "torch"):
        sys.exit(f"run_backend.py: backend must be tensorflow, jax or torch. Received: {backend!r}")
    os.environ["KERAS_BACKEND"] = backend
    import pytest

    print(f"=== keras-asc test suite on the {backend} backend ===", flush=True)
    sys.exit(pytest.main(args))
