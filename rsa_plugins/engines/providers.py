"""What RSA asks LiteLLM about a model and a process: which providers speak the OpenAI
protocol, what a model's tokens cost, how many stop strings a request may carry, and whether
callbacks are registered (the direct transport would skip them)."""

from __future__ import annotations

#: hosts that refuse more than 4 stop strings (OpenAI's API and Azure's); other servers reached
#: directly (vLLM, SGLang, ...) take every one
CAPPED_HOSTS = ("api.openai.com", ".openai.azure.com", "api.groq.com")
#: providers whose servers speak the plain OpenAI chat-completions protocol at `api_base`
OPENAI_COMPATIBLE = {"hosted_vllm", "openai", "openai_like", "custom_openai", "lm_studio",
                     "llamafile", "sglang", "xinference"}


def model_prices(model: str) -> tuple[float, float] | None:
    """US dollars per prompt token and per completion token of a LiteLLM model string, from
    LiteLLM's cost map (`litellm.register_model` adds prices); None where it has none."""
    import litellm

    try:
        prompt, completion = litellm.cost_per_token(model=model, prompt_tokens=1_000_000,
                                                    completion_tokens=1_000_000)
    except Exception:  # noqa: BLE001 - LiteLLM raises several kinds for an unmapped model
        return None
    return prompt / 1_000_000, completion / 1_000_000


def stop_cap(through_litellm: bool, bases: list[str]) -> int | None:
    """The most stop strings a request may carry (None: no cap).  LiteLLM's `completion` keeps
    the first 4 for every provider (unless `litellm.disable_stop_sequence_limit`); the direct
    transport sends every one, but to hosts that refuse more than 4."""
    import litellm

    capped = through_litellm and not litellm.disable_stop_sequence_limit
    return 4 if capped or any(h in base for h in CAPPED_HOSTS for base in bases) else None


def user_callbacks() -> bool:
    """Whether callbacks other than the Router's own routing handlers are registered with
    LiteLLM (the direct transport would skip them)."""
    import litellm

    for name in ("callbacks", "success_callback", "failure_callback", "_async_success_callback",
                 "_async_failure_callback", "input_callback"):
        for cb in getattr(litellm, name, None) or []:
            if not type(cb).__module__.startswith("litellm.router_strategy"):
                return True
    return False
