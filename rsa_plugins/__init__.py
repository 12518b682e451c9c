"""rsa-plugins: Recursive Self-Aggregation (arXiv 2509.26626) for the frameworks you already use.

    >>> import rsa_plugins
    >>> result = rsa_plugins.run("What is 17 * 23?", model="openai/gpt-4o-mini",
    ...                          population=16, aggregation_size=4, steps=10)
    >>> result.answer, result.steps[-1]["majority_share"]
"""

from ._background import aclose
from ._version import __version__
from .answers import equivalent, extract, vote
from .api import arun, as_problem, make_engine, run
from .config import RSAConfig
from .engines.base import Engine, EngineError
from .loop import RSALoop
from .observers import Observer
from .selection import select
from .types import Candidate, Completion, Message, Problem, Request, RSAResult, Usage
from .validate import ConfigError

__all__ = [
    "RSALoop", "RSAConfig", "ConfigError", "Engine", "EngineError", "Observer", "Problem",
    "Message", "Request", "Completion", "Candidate", "RSAResult", "Usage", "run", "arun",
    "aclose", "make_engine", "as_problem", "extract", "equivalent", "vote", "select",
    "__version__",
]
