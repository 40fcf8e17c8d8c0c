"""Fixtures for the serve tests (helpers in ``serve_helpers``)."""
from __future__ import annotations

import pytest
from serve_helpers import Server


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """One server for a module's tests (bearer token on, a small upload limit for the oversize case)."""
    s = Server(tiny_model_dir, tmp_path_factory.mktemp("serve"), "--max-upload-mb", "0.05",
               "--max-loaded-adapters", "2").start()
    yield s
    s.stop()
