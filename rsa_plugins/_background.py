"""A background event loop for synchronous callers (scripts, lm-eval, DSPy `forward`).

Running every synchronous call on one long-lived loop keeps LiteLLM's async clients valid
between calls (a fresh `asyncio.run` per call leaves clients bound to dead loops) and works
when the caller itself is inside a running loop (notebooks).
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="rsa-plugins-loop", daemon=True).start()
            _loop = loop
            atexit.register(_shutdown)
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the background loop and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, _background_loop()).result()


async def aclose() -> None:
    """Close LiteLLM's cached async clients on the current loop."""
    try:
        import litellm
    except ImportError:
        return
    close = getattr(litellm, "close_litellm_async_clients", None)
    if close is not None:
        try:
            await close()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass


def _shutdown() -> None:
    global _loop
    loop = _loop
    if loop is None or loop.is_closed():
        return
    try:
        asyncio.run_coroutine_threadsafe(aclose(), loop).result(timeout=10)
    except Exception:  # noqa: BLE001
        pass
    loop.call_soon_threadsafe(loop.stop)
    _loop = None
