"""Between an Inspect sample and RSA: the sample's chat as a `Problem`, a candidate as output."""

from __future__ import annotations

from inspect_ai.model import ChatCompletionChoice, ModelOutput
from inspect_ai.solver import TaskState

from ...answers import detect_kind
from ...kinds import KINDS, NAMES
from ...types import Candidate, Message, Problem

#: ``preset`` values: "auto" picks the answer format (see `sample_problem`), "none" adds none,
#: the others name an answer kind whose format RSA asks for
PRESETS = ("auto", "none", *NAMES)


def sample_problem(state: TaskState, preset: str = "auto", system_message: str | None = None
                   ) -> Problem:
    """The :class:`Problem` for a sample: its chat, plus the preset's answer format.

    The chat is the sample's messages: system messages (and `system_message`, since
    ``--solver`` replaced the task's chain and with it any ``system_message()`` solver), earlier
    user/assistant turns as few-shot turns, the last user message as the prompt, and a trailing
    assistant message as a prefill.

    The answer format ("auto"): multiple choice when the sample has choices (options listed as
    ``A) ...`` lines), else the sample metadata's ``rsa_kind`` (tasks can say "math"), else
    detected from the prompt.  RSA asks for that format (and repeats it in aggregation prompts)
    unless the prompt already names it, or the sample has no target (an open-ended task gets no
    answer line), or ``preset="none"``.  Another preset names the kind to ask for.
    """
    turns: list[Message] = []
    systems = [m.text for m in state.messages if m.role == "system"]
    for m in state.messages:
        if m.role in ("user", "assistant") and m.text.strip():
            turns.append({"role": m.role, "content": m.text})
    prefill = turns.pop()["content"] if turns and turns[-1]["role"] == "assistant" else None
    prompt = turns.pop()["content"] if turns and turns[-1]["role"] == "user" \
        else state.user_prompt.text
    choices = [c.value for c in state.choices] if len(state.choices) else None
    target = [t for t in state.target.target if str(t).strip()] or None  # a sample without one has [""]
    hinted = (state.metadata or {}).get("rsa_kind")
    if preset in ("auto", "none"):
        kind = "multiple_choice" if choices else hinted if hinted in KINDS \
            else detect_kind(prompt, choices)
    else:
        kind = preset
    answer_format = None
    if preset != "none" and (target or preset != "auto"):
        if kind == "multiple_choice" and choices:
            prompt += "\n\n" + "\n".join(f"{chr(65 + i)}) {c}" for i, c in enumerate(choices))
        if KINDS[kind].marker not in prompt:
            prompt = f"{prompt}\n\n{KINDS[kind].instruction}"
            answer_format = KINDS[kind].clause
    if target and kind == "multiple_choice":
        target = [t.strip().upper() for t in target]
    if system_message:
        systems.append(system_message)
    return Problem(prompt=prompt, id=f"{state.sample_id}-epoch{state.epoch}", target=target,
                   kind=kind, choices=choices, system="\n\n".join(systems) or None,
                   fewshot=turns, prefill=prefill, answer_format=answer_format,
                   metadata={"sample_id": state.sample_id, "epoch": state.epoch})


def set_output(state: TaskState, model: str, cand: Candidate, problem: Problem) -> None:
    """Make `cand` the sample's current answer: output, last message, marked choices."""
    comp = cand.completion
    choice = comp.native if isinstance(comp.native, ChatCompletionChoice) else \
        ModelOutput.from_content(model=model, content=comp.text).choices[0]
    message = choice.message.model_copy()
    message.metadata = {**(message.metadata or {}), "rsa": {"step": cand.step, "slot": cand.slot,
                                                             "answer": cand.answer}}
    state.output = ModelOutput(model=model, choices=[choice.model_copy(update={"message": message})])
    if state.messages and state.messages[-1].role == "assistant" and \
            (state.messages[-1].metadata or {}).get("rsa") is not None:
        state.messages[-1] = message
    else:
        state.messages.append(message)
    if problem.kind == "multiple_choice" and len(state.choices):
        letter = str(cand.answer).strip().upper() if cand.answer is not None else None
        for i in range(len(state.choices)):
            state.choices.mark_choice(i, letter == chr(65 + i))
