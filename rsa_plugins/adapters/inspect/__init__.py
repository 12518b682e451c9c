"""Inspect AI adapter: the ``rsa`` solver (`.solver`), the ``answer_match`` scorer (`.scorer`),
the engine that generates through the task's model (`.engine`), and the translation between a
sample's state and an RSA problem (`.problem`).  `.registry` is Inspect's entry point."""

from .scorer import answer_match
from .solver import RSASolverError, RSAStore, rsa

__all__ = ["rsa", "answer_match", "RSASolverError", "RSAStore"]
