"""Imported at interpreter start by ``rsa_plugins_startup.pth`` (installed with rsa-plugins).

It installs `rsa_plugins._hooks`, which registers the plugins right after a framework is
imported (for example ``lm_eval --model rsa-vllm`` on the stock command).  The hook file is
loaded by path, so the ``rsa_plugins`` package itself is not imported at start-up: the cost is
one small module and a ``sys.meta_path`` entry.  ``RSA_PLUGINS_NO_HOOK=1`` switches it off
(`rsa_plugins._hooks.hook_disabled`).
A failure here never stops Python: it is reported on stderr and the hook stays off.
"""

import os
import sys


def _install() -> None:
    hooks = sys.modules.get("rsa_plugins._hooks")
    if hooks is None:
        import importlib.util

        spec = importlib.util.find_spec("rsa_plugins")
        if spec is None or not spec.submodule_search_locations:
            return
        path = os.path.join(list(spec.submodule_search_locations)[0], "_hooks.py")
        hspec = importlib.util.spec_from_file_location("rsa_plugins._hooks", path)
        if hspec is None or hspec.loader is None:
            return
        hooks = importlib.util.module_from_spec(hspec)
        sys.modules["rsa_plugins._hooks"] = hooks
        try:
            hspec.loader.exec_module(hooks)
        except BaseException:
            del sys.modules["rsa_plugins._hooks"]
            raise
    hooks.install()


try:
    _install()
except Exception as _exc:  # noqa: BLE001 - never break interpreter start-up
    sys.stderr.write(f"rsa-plugins: start-up hook not installed ({type(_exc).__name__}: {_exc})\n")
