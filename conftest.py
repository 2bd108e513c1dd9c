"""Doctest namespace for ``--doctest-modules`` over ``sprint_lab/``.

Every ``>>>`` example in the package runs with these names already imported:

- ``sl`` (``sprint_lab``), ``np``, ``pd``, ``torch``;
- ``model``: a tiny randomly initialised Llama with grouped-query attention (3 layers, 4 query
  heads, 2 KV heads, float32) loaded through :func:`sprint_lab.load_model`, built once per session;
- ``problems``: four offline arithmetic word problems (``sl.load_problems("arith", limit=4)``).

The model is built lazily, only for the first example that uses it.
"""

from __future__ import annotations

from typing import Any

import pytest


class _LazyNamespace(dict):
    """A dict that builds ``model`` and ``problems`` on first lookup."""

    def __init__(self, tmp_factory: Any) -> None:
        super().__init__()
        self._tmp_factory = tmp_factory

    def __missing__(self, key: str) -> Any:
        if key == "model":
            import sprint_lab as sl
            from tests.helpers import save_tiny_models

            paths = save_tiny_models(self._tmp_factory.mktemp("doctest-models"))
            self[key] = sl.load_model(paths["llama"], dtype="float32")
        elif key == "problems":
            import sprint_lab as sl

            self[key] = sl.load_problems("arith", limit=4)
        else:
            raise KeyError(key)
        return self[key]


@pytest.fixture(scope="session")
def _doctest_objects(tmp_path_factory) -> _LazyNamespace:
    return _LazyNamespace(tmp_path_factory)


@pytest.fixture(autouse=True)
def _doctest_names(request, doctest_namespace, _doctest_objects) -> None:
    """Fill the doctest namespace (only for doctest items)."""
    dtest = getattr(request.node, "dtest", None)
    if dtest is None:
        return
    import numpy as np
    import pandas as pd
    import torch

    import sprint_lab as sl

    doctest_namespace.update(sl=sl, np=np, pd=pd, torch=torch)
    for key in ("model", "problems"):
        if key in (dtest.docstring or "") and key not in doctest_namespace:
            doctest_namespace[key] = _doctest_objects[key]
