"""Packaging glue that pyproject.toml cannot express: the start-up ``.pth`` file.

``rsa_plugins_startup.pth`` must sit at the root of site-packages, next to the packages, for
Python's ``site`` module to run it.  `build_py` writes it there: into the build directory for
wheels (regular installs), and into the wheel's root for editable installs (PEP 660), where
setuptools otherwise ships only its own path hook.  See docs/lm-eval.md.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py

PTH_NAME = "rsa_plugins_startup.pth"
PTH_LINE = "import _rsa_plugins_startup\n"


class build_py(_build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            # editable_wheel points install_lib at the unpacked wheel it is about to zip
            target = Path(self.get_finalized_command("install").install_lib)
        else:
            target = Path(self.build_lib)
        target.mkdir(parents=True, exist_ok=True)
        (target / PTH_NAME).write_text(PTH_LINE)
        self._rsa_pth = str(target / PTH_NAME)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs.append(str(Path(self.build_lib) / PTH_NAME))
        return outputs


setup(cmdclass={"build_py": build_py})
