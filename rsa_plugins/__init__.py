"""rsa-plugins: Recursive Self-Aggregation (arXiv 2509.26626) for the frameworks you already use.

    >>> import rsa_plugins
    >>> result = rsa_plugins.run("What is 17 * 23?", model="openai/gpt-4o-mini",
    ...                          population=16, aggregation_size=4, steps=10)
    >>> result.answer, result.steps[-1]["majority_share"]
"""

__version__ = "0.1.0"


from ._runner import aclose
from .answers import equivalent, extract, vote
from .api import arun, as_problem, make_engine, run
from .config import ConfigError, RSAConfig
from .engines.base import Engine
from .loop import RSA
from .types import Candidate, Completion, Problem, Request, RSAResult, Usage

__all__ = [
    "RSA", "RSAConfig", "ConfigError", "Engine", "Problem", "Request", "Completion", "Candidate",
    "RSAResult", "Usage", "run", "arun", "aclose", "make_engine", "as_problem", "extract",
    "equivalent", "vote", "__version__",
]
