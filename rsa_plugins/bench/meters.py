"""What the benchmark measures with: the GPU it watches, peak memory, and vLLM engines wrapped
so that every request going in is recorded and timed (`rsa_plugins.busy`)."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from ..busy import BusyClock
from .workload import Batches


def visible_gpu(env: str | None) -> int | str | None:
    """The first GPU this process may use, as named in ``CUDA_VISIBLE_DEVICES`` (`env`).

    Unset: GPU 0.  An index gives an int, a UUID (``GPU-...``/``MIG-...``, possibly a prefix,
    as CUDA accepts) the string; None when the variable hides every GPU ("", "-1").  Indices
    are CUDA's order, which is NVML's (PCI bus) order unless ``CUDA_DEVICE_ORDER`` says
    otherwise on a machine of mixed GPUs.
    """
    if env is None:
        return 0
    first = env.split(",")[0].strip()
    if not first or first.startswith("-"):
        return None
    return int(first) if first.isdigit() else first

def _nvml_device(which: int | str) -> Any:
    import pynvml

    pynvml.nvmlInit()
    if isinstance(which, int):
        return pynvml.nvmlDeviceGetHandleByIndex(which)
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        if uuid == which or uuid.startswith(which):
            return handle
    raise LookupError(f"no GPU with UUID {which!r}")

class MemoryPeak:
    """Peak memory in use (NVML, all processes) on the first GPU of ``CUDA_VISIBLE_DEVICES``
    while the block runs; `device` names the GPU as that variable would (nothing read on a
    machine without NVIDIA GPUs)."""

    def __init__(self, device: int | str | None = None) -> None:
        self.peak = 0
        self._stop = threading.Event()
        which = device if device is not None else visible_gpu(
            os.environ.get("CUDA_VISIBLE_DEVICES"))
        self._read: Callable[[], int] | None = None
        if which is None:
            return
        try:
            import pynvml

            handle = _nvml_device(which)
            self._read = lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:  # noqa: BLE001 - no NVIDIA GPU (CPU build): nothing to read
            self._read = None

    def __enter__(self) -> MemoryPeak:
        if self._read is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._read())  # type: ignore[misc]

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._read is not None:
            self.peak = max(self.peak, self._read())

    @property
    def gib(self) -> float | None:
        return round(self.peak / 2**30, 2) if self._read is not None else None

class MeteredLLM:
    """Wraps a `vllm.LLM` or `AsyncLLM`: every request going in is recorded (prompt ids and
    length) and timed with a `BusyClock`, whoever sends it (RSA's engines or the bench's own
    replays), so every mode is measured at the same boundary."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm
        self.clock = BusyClock()
        self.batches: Batches = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def restart(self) -> None:
        """Start a new mode: clock and recording from zero."""
        self.clock.reset()
        self.batches = []

    def _record(self, prompts: Sequence[Any], params: Sequence[Any]) -> None:
        self.batches[-1].extend((list(p["prompt_token_ids"]), int(sp.max_tokens or 0))
                                for p, sp in zip(prompts, params))

class MeteredOfflineLLM(MeteredLLM):
    """`MeteredLLM` for `vllm.LLM`: one recorded batch per ``generate`` call."""

    def generate(self, prompts: Any, sampling_params: Any = None, **kwargs: Any) -> Any:
        prompts = list(prompts)
        params = (sampling_params if isinstance(sampling_params, list)
                  else [sampling_params] * len(prompts))
        self.batches.append([])
        self._record(prompts, params)
        self.clock.enter(len(prompts))
        try:
            return self._llm.generate(prompts, sampling_params=sampling_params, **kwargs)
        finally:
            self.clock.leave(len(prompts))

class MeteredAsyncLLM(MeteredLLM):
    """`MeteredLLM` for `AsyncLLM`: every request of a mode goes into one recorded batch."""

    async def generate(self, prompt: Any, sampling_params: Any, request_id: str,
                       *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        if not self.batches:
            self.batches.append([])
        self._record([prompt], [sampling_params])
        self.clock.enter()
        try:
            async for out in self._llm.generate(prompt, sampling_params, request_id, *args,
                                                **kwargs):
                yield out
        finally:
            self.clock.leave()
