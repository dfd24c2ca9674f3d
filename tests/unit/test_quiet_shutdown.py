"""The operator's event-loop error handler: kopf's watch generator failing to close at exit is one warning line,
anything else is asyncio's default report (with its traceback)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kopf._cogs.clients import watching

from carbonshift.commands.run import quiet_shutdown_handler


async def ours() -> AsyncIterator[int]:
    yield 1


def context(agen: Any, exc: BaseException) -> dict[str, Any]:
    """What asyncio's shutdown_asyncgens passes when closing a generator fails."""
    return {"message": f"an error occurred during closing of asynchronous generator {agen!r}", "exception": exc,
            "asyncgen": agen}  # fmt: skip


def test_kopfs_generator_failing_to_close_is_one_warning_line(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    agen = watching.infinite_watch(settings=None, resource=None, namespace=None)  # type: ignore[arg-type]
    try:
        with caplog.at_level(logging.WARNING):
            quiet_shutdown_handler(loop, context(agen, RuntimeError("generator didn't stop after athrow()")))
        [record] = caplog.records
        assert record.levelno == logging.WARNING and record.name == "carbonshift"
        assert "infinite_watch did not close cleanly" in record.getMessage() and record.exc_info is None
    finally:
        loop.run_until_complete(agen.aclose())
        loop.close()


@pytest.mark.parametrize("exc", [RuntimeError("generator didn't stop after athrow()"), ValueError("x")])
def test_anything_else_gets_asyncios_report(caplog: pytest.LogCaptureFixture, exc: BaseException) -> None:
    loop = asyncio.new_event_loop()
    agen = ours()  # not kopf's: reported as asyncio reports it, traceback included
    try:
        with caplog.at_level(logging.WARNING):
            quiet_shutdown_handler(loop, context(agen, exc))
        [record] = caplog.records
        assert record.name == "asyncio" and record.levelno == logging.ERROR and record.exc_info is not None
    finally:
        loop.run_until_complete(agen.aclose())
        loop.close()
