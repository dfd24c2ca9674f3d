"""Fixtures for provider tests: a scripted local HTTP server and a sleep recorder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from scripted_server import ScriptedServer, SleepRecorder


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()
