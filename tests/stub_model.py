"""The scripted model behind `format_stub.py`: always right, in the format it was last shown.

It plays a model that follows instructions literally: it solves every problem it can parse
correctly and writes the answer in the format of the **last format cue** it reads in the whole
request (system message, few-shot turns, user turn and assistant prefill, in order).

=================================  ==========================  ===============================
cue in the request                 (task)                      reply ends with
=================================  ==========================  ===============================
``#### 7`` (a few-shot answer)     gsm8k                       ``#### 7``
``The answer is``                  gsm8k-cot, MMLU-Pro         ``The answer is 7.`` / ``(B).``
``So the answer is``               BBH CoT                     ``So the answer is 7.``
``The final answer is``            gsm8k_cot_llama             ``The final answer is 7``
``I hope it is correct``           minerva_math                ``Final Answer: The final answer
                                                               is $7$. I hope it is correct.``
``ANSWER:``                        an explicit instruction     ``..., so ANSWER: 7`` (a
                                                               letter: ``ANSWER: B`` alone)
``\\boxed``                         math instruction            ``\\boxed{7}``
``The best answer is``             arc_challenge_chat          ``The best answer is B.``
``[BEGIN]``                        mbpp                        the program, then ``[DONE]``
a line ending ``A:``/``Answer:``   nq_open, triviaqa (only     ``7``
                                   when no other cue)
none                               open-ended writing          prose, no answer line
=================================  ==========================  ===============================

With an assistant prefill (the last message is the assistant's) the reply continues it.

Problems it solves (the last one found is the one asked): "Tom has 3 apples and buys 4 more."
(+), "... and gives away 4." (-), "Tom buys 3 boxes of pens with 4 in each box." (x), "Which
number equals 3 plus 4?" with options ``A. 6`` ... (multiple choice, up to J), "what is 3 plus
4" (short-answer QA), a function whose docstring says "Return the sum of 3 and 4." (humaneval:
the body, indented) and "return the sum of 3 and 4. Your code should pass these tests: assert
f() == 7" (mbpp: the whole function).  An **aggregation** of code (a request quoting "----
Solution 1 ----") copies its first candidate verbatim, as a model that agrees with it would.
Anything else is open-ended: a short e-mail signed with the name of the last "sign ... as NAME"
instruction (else "Sam"), in lower case without commas when an instruction asks for that (IFEval).
"""

from __future__ import annotations

import re
from typing import Any

#: format cue -> format name (searched in the concatenated request text; the last match wins)
CUES = [
    (re.compile(r"####"), "hash"),
    (re.compile(r"The answer is"), "cot"),
    (re.compile(r"So the answer is"), "bbh"),
    (re.compile(r"The final answer is"), "final"),
    (re.compile(r"I hope it is correct"), "minerva"),
    (re.compile(r"ANSWER:"), "answer_line"),
    (re.compile(r"\\boxed"), "boxed"),
    (re.compile(r"The best answer is"), "best"),
    (re.compile(r"\[BEGIN\]"), "begin"),
]
#: a bare question-answer prompt: the cue only where no other cue is present
SHORT = re.compile(r"(?m)^(?:Q: .*\n)?(?:A|Answer):[ \t]*$")

ADD = r"(?P<name>[A-Z][a-z]+) has (?P<a>\d+) (?P<thing>[a-z]+) and buys (?P<b>\d+) more\."
SUB = r"(?P<name2>[A-Z][a-z]+) has (?P<c>\d+) (?P<thing2>[a-z]+) and gives away (?P<d>\d+)\."
MUL = r"(?P<name3>[A-Z][a-z]+) buys (?P<e>\d+) boxes of (?P<thing3>[a-z]+) with (?P<f>\d+) in each box\."
MC = r"Which number equals (?P<g>\d+) plus (?P<h>\d+)\?"
QA = r"[Ww]hat is (?P<i>\d+) plus (?P<j>\d+)\b"
CODE = r"Return the sum of (?P<k>\d+) and (?P<l>\d+)\."
MBPP = (r"return the sum of (?P<m>\d+) and (?P<n>\d+)\.\s+Your code should pass these tests:\s*"
        r"assert (?P<fn>\w+)\(\)")
PROBLEM = re.compile("|".join(f"(?:{p})" for p in (ADD, SUB, MUL, MC, QA, CODE, MBPP)))
OPTION = re.compile(r"^\s*\(?([A-J])[.)]\s*(-?\d+)\s*$", re.M)
BLOCK = re.compile(r"---- Solution 1 ----\n(.*?)\n\n(?:---- Solution 2 ----|Now write)", re.S)

SIGN = re.compile(r"[Ss]ign [^.\n]*?\bas ([A-Z][a-z]+)")
PAD = "I check every number once more, slowly and carefully,"


def text_of(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # OpenAI content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def last_cue(text: str) -> str | None:
    """The format of the last cue in `text` (None: no cue, i.e. open-ended)."""
    best, where = None, -1
    for pattern, name in CUES:
        for m in pattern.finditer(text):
            if m.end() > where:
                best, where = name, m.end()
    if best is None and SHORT.search(text):
        return "short"
    return best


def solve(text: str) -> tuple[str, str, str] | None:
    """(answer, reasoning, kind) for the last problem in `text`; None if there is none."""
    text = text.replace("\\n", "\n")  # arc_challenge_chat's single-quoted YAML sends a literal \n
    found = list(PROBLEM.finditer(text))
    if not found:
        return None
    m = found[-1]
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    if "a" in g:
        a, b = int(g["a"]), int(g["b"])
        return str(a + b), f"{g['name']} starts with {a} and gets {b} more, so {a} + {b} = {a + b}.", "math"
    if "c" in g:
        c, d = int(g["c"]), int(g["d"])
        return str(c - d), f"{g['name2']} starts with {c} and gives {d} away, so {c} - {d} = {c - d}.", "math"
    if "e" in g:
        e, f = int(g["e"]), int(g["f"])
        return str(e * f), f"There are {e} boxes with {f} each, so {e} * {f} = {e * f}.", "math"
    if "i" in g:
        return str(int(g["i"]) + int(g["j"])), "", "short"
    if "k" in g:
        return f"    return {int(g['k']) + int(g['l'])}\n", "", "code"
    if "m" in g:
        return f"def {g['fn']}():\n    return {int(g['m']) + int(g['n'])}\n", "", "program"
    value = int(g["g"]) + int(g["h"])
    for letter, shown in OPTION.findall(text[m.end():]):
        if int(shown) == value:
            return letter, f"{g['g']} plus {g['h']} is {value}, which is option {letter}.", "choice"
    return None


def open_ended(text: str, fmt: str | None) -> str:
    """A short e-mail, following IFEval-style instructions on case and commas."""
    signer = ([m.group(1) for m in SIGN.finditer(text)] or ["Sam"])[-1]
    body = ("Dear team,\nthank you for the clear plan. I have read it and I agree with the "
            f"schedule; I will send my part by Friday.\nBest regards,\n{signer}")
    if fmt is not None and fmt != "short":  # an instruction asked for an answer line even here
        body += {"hash": "\n#### done", "cot": " The answer is done.",
                 "boxed": " \\boxed{done}", "best": " The best answer is A."}.get(
            fmt, "\nANSWER: done")
    if "lowercase letters" in text:
        body = body.lower()
    if re.search(r"\b(?:no|any|without) commas?\b", text, re.I):
        body = body.replace(",", "")
    return body


def reply_for(messages: list[dict[str, Any]], pad_words: int = 0) -> tuple[str, str]:
    """(reply text, format used) for a chat request; see the module docstring."""
    text = "\n\n".join(text_of(m) for m in messages)
    systems = [text_of(m) for m in messages if m.get("role") == "system"]
    if systems and "Your output fields are:" in systems[-1]:
        users = [text_of(m) for m in messages if m.get("role") == "user"]
        return dspy_reply(systems[-1], users[-1] if users else text), "dspy"
    fmt = last_cue(text)
    prefill = text_of(messages[-1]) if messages and messages[-1].get("role") == "assistant" \
        else None
    solved = solve(text)
    if solved is None:
        return open_ended(text, fmt), fmt or "none"
    answer, reasoning, kind = solved
    if kind in ("code", "program"):
        return code_reply(text, answer, kind, prefill), "code"
    if pad_words > 0:
        words = (PAD + " ") * (pad_words // len(PAD.split()) + 1)
        reasoning = " ".join(words.split()[:pad_words]) + " " + reasoning
    if prefill is not None and fmt == "best" and prefill.rstrip().endswith("The best answer is"):
        return f" {answer}.", fmt
    if prefill is not None and fmt == "cot" and prefill.rstrip().endswith("The answer is"):
        return f" {answer}.", fmt
    shown = f"({answer})" if kind == "choice" and fmt in ("cot", "bbh") else answer
    endings = {"hash": f"{reasoning}\n#### {answer}", "cot": f"{reasoning} The answer is {shown}.",
               "bbh": f"{reasoning} So the answer is {shown}.",
               "final": f"{reasoning} The final answer is {answer}",
               "minerva": f"{reasoning}\nFinal Answer: The final answer is ${answer}$. I hope it "
                          "is correct.",
               # inline for numbers ("... so ANSWER: 7"), as models often write it; a letter
               # on its own line (Inspect's multiple_choice reads it there)
               "answer_line": f"{reasoning}\nANSWER: {answer}" if kind == "choice" else
                              f"{reasoning.rstrip('.')}, so ANSWER: {answer}",
               "boxed": f"{reasoning} So the result is \\boxed{{{answer}}}.",
               "best": f"{reasoning} The best answer is {answer}.",
               "short": answer, None: f"{reasoning} So the result is {answer}."}
    return endings.get(fmt, endings[None]).strip(), fmt or "none"


#: DSPy output fields that take the answer itself
ANSWER_FIELDS = ("answer", "label", "result", "final_answer", "number", "total")


def dspy_reply(system: str, task: str) -> str:
    """A reply in DSPy's ChatAdapter (``[[ ## field ## ]]``) or JSONAdapter (a JSON object)
    format, answering the last user turn, with the output fields its system message lists:
    ``reasoning``, the answer (fields
    named like `ANSWER_FIELDS`), and a plain sentence for any other (GEPA's new instruction)."""
    import json

    section = system.split("Your output fields are:")[1].split("All interactions")[0]
    fields = re.findall(r"^\d+\. `(\w+)`", section, re.M)
    solved = solve(task)
    answer, reasoning = (solved[0], solved[1] or "It is that.") if solved else \
        ("done", "There is nothing to compute.")
    values = {f: reasoning if f == "reasoning" else answer if f in ANSWER_FIELDS else
              "Solve the problem step by step, then give the final number." for f in fields}
    if "Outputs will be a JSON object" in system:
        return json.dumps(values)
    return "\n\n".join(f"[[ ## {k} ## ]]\n{v}" for k, v in values.items()) + \
        "\n\n[[ ## completed ## ]]"


def code_reply(text: str, code: str, kind: str, prefill: str | None) -> str:
    """Code: the function body (humaneval) or the function (mbpp, then ``[DONE]``); with a
    prefill that opened a fence (humaneval_instruct) the fence is closed.  An aggregation copies
    its first candidate verbatim, less the prefill it starts with."""
    block = BLOCK.search(text) if "---- Solution 1 ----" in text else None
    if block is not None:
        copied = block.group(1)
        return copied[len(prefill):] if prefill and copied.startswith(prefill) else copied
    if prefill is not None and prefill.rstrip().count("```") % 2 == 1:
        return f"{code}```"
    return f"{code}[DONE]" if kind == "program" else code


def cut(text: str, stop: list[str], max_tokens: int | None) -> tuple[str, str]:
    """Apply vLLM's stop-string and max_tokens semantics: (text, finish_reason)."""
    finish = "stop"
    hits = [text.find(s) for s in stop if s and s in text]
    if hits:
        text = text[: min(hits)]
    if max_tokens is not None:
        words = re.findall(r"\s*\S+", text)
        if len(words) > max_tokens:
            text, finish = "".join(words[:max_tokens]), "length"
    return text, finish


PIECE = re.compile(r"\s*\S+|\s+$")
SUM = re.compile(r"Which number equals (\d+) plus (\d+)\?")


def prompt_logprobs(pieces: list[str]) -> tuple[list[float], list[dict[str, float]]]:
    """Log-probabilities of a prompt's pieces as a model that knows the sums would give them:
    after the last "Answer:", a number other than the asked sum is unlikely (-6), anything else
    likely (-0.1); each position's top alternative is the likely one."""
    text = "".join(pieces)
    asked = list(SUM.finditer(text))
    answer_at = text.rfind("Answer:")
    expected = str(sum(map(int, asked[-1].groups()))) if asked else None
    logprobs, tops, at = [], [], 0
    for piece in pieces:
        word = piece.strip().rstrip(".")
        wrong = (expected is not None and at >= answer_at >= 0 and word.lstrip("-").isdigit()
                 and word != expected)
        lp = -6.0 if wrong else -0.1
        logprobs.append(lp)
        tops.append({piece: lp, **({f" {expected}": -0.1} if wrong else {})})
        at += len(piece)
    return logprobs, tops
