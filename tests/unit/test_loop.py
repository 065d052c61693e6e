"""The event loop is chosen in kzgate/loop.py: uvloop when wanted and installed, else asyncio."""

from __future__ import annotations

import asyncio
import sys

import pytest

from kzgate.loop import new_event_loop, run

uvloop = pytest.importorskip("uvloop")


async def running() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_uvloop_when_preferred_and_installed() -> None:
    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


def test_a_pure_python_worker_gets_asyncio_even_with_uvloop_installed() -> None:
    loop = new_event_loop(prefer_uvloop=False)
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()


def test_asyncio_when_uvloop_is_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now raises ImportError
    loop = new_event_loop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()


def test_run_runs_the_coroutine_on_the_chosen_loop_and_closes_it() -> None:
    loop = run(running())
    assert isinstance(loop, uvloop.Loop) and loop.is_closed()
    loop = run(running(), prefer_uvloop=False)
    assert not isinstance(loop, uvloop.Loop) and loop.is_closed()
