"""``python -m rsa_plugins.adapters.lm_eval ...``: the ``lm_eval`` command with the RSA models."""

from . import main

main()
