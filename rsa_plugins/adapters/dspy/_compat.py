"""The DSPy names rsa-plugins needs that DSPy does not export publicly.

Checked on dspy 3.4.1.  Each private name is imported here and nowhere else, with a fallback so
that a move in DSPy degrades one convenience instead of breaking ``dspy.RSA``; `MISSING` lists
the names that were not found, and tests/test_compat.py fails loudly when it is not empty.
`ADAPTER_CALL` is the adapter call protocol `DSPyEngine` wraps (public methods, but their
parameters are not a documented contract), checked by the same test.
"""

from __future__ import annotations

import json
import re
from typing import Any

MISSING: list[str] = []
#: parameters of ``Adapter.__call__`` / ``Adapter.acall`` after ``self``
ADAPTER_CALL = ("lm", "lm_kwargs", "signature", "demos", "inputs")

try:  # how DSPy itself turns field values (pydantic models, lists...) into JSON
    from dspy.adapters.utils import serialize_for_json
except ImportError:  # pragma: no cover - moved
    MISSING.append("dspy.adapters.utils.serialize_for_json")

    def serialize_for_json(value: Any) -> Any:  # type: ignore[misc]
        dump = getattr(value, "model_dump", None)
        return dump(mode="json") if callable(dump) else json.loads(json.dumps(value, default=str))

try:  # the instructions DSPy gives a signature without a docstring
    from dspy.signatures.signature import _default_instructions
except ImportError:  # pragma: no cover - moved
    MISSING.append("dspy.signatures.signature._default_instructions")
    _default_instructions = None

_DEFAULT = re.compile(r"Given the fields (`\w+`(, `\w+`)*)?, produce the fields `\w+`(, `\w+`)*\.")


def is_default_instructions(signature: Any) -> bool:
    """Whether `signature`'s instructions are only DSPy's default ("Given the fields
    `question`, produce the fields `answer`."), for its fields or for them before
    ``ChainOfThought`` added ``reasoning``: no task of the user's to repeat."""
    text = (signature.instructions or "").strip()
    if _default_instructions is None:
        return bool(_DEFAULT.fullmatch(text))
    plain = signature.delete("reasoning") if "reasoning" in signature.output_fields else signature
    return text in {_default_instructions(signature), _default_instructions(plain)}
