"""Fixtures shared by every test package."""

from __future__ import annotations

import pytest

from tests.support.docker import DockerUnavailable, ensure_dockerd, ensure_test_images


@pytest.fixture(scope="session")
def docker_host() -> str:
    """DOCKER_HOST of the engine; a test that needs docker fails (not skips) without it."""
    reason = ""
    try:
        host = ensure_dockerd()
        ensure_test_images(host)
    except DockerUnavailable as exc:
        reason = str(exc)
    if reason:
        pytest.fail(f"these tests need a real Docker Engine and could not get one:\n{reason}", pytrace=False)
    return host
