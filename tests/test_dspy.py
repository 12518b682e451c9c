"""dspy.RSA with a scripted model behind the real dspy.LM (cache, rollout_id, usage, adapters).

The scripted engine plugs into ``dspy.LM(engine=...)``, so every call goes through DSPy's own
cache, usage tracking, history and ChatAdapter parsing; only the model is fake.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import os
import re
import subprocess
import sys
import threading
import time
import types
from collections import Counter

import pytest

dspy = pytest.importorskip("dspy")

from dspy.lm15 import Message, Response, TextPart, Usage  # noqa: E402

from rsa_plugins.adapters import dspy as rsa_dspy  # noqa: E402
from rsa_plugins.adapters.dspy import RSA, install, vote_key  # noqa: E402
from rsa_plugins.config import ConfigError  # noqa: E402

CAND_ANSWER = re.compile(r"^\s*answer: (.*)$", re.M)


class ScriptedLM:
    """lm15 engine: first-step calls answer from `answers` in call order; aggregation calls
    (their prompt shows ``candidate_solutions``) answer the majority of the candidates' answers.
    Every call reports 10 prompt and 5 completion tokens.  `garbage(i)` makes call i unparsable."""

    def __init__(self, answers=("A", "B", "A"), garbage=None, extra=None) -> None:
        self.answers, self.garbage, self.extra = list(answers), garbage, extra or {}
        self.lock = threading.Lock()
        self.calls = self.gen_calls = self.agg_calls = 0
        self.prompts: list[str] = []
        self.active = self.max_active = 0

    def complete(self, request):
        user = [m.text or "" for m in request.messages if m.role == "user"][-1]
        system = request.system if isinstance(request.system, str) else "".join(
            p.text for p in (request.system or []))
        section = system.split("Your output fields are:")[-1].split("All interactions")[0]
        outputs = re.findall(r"\d+\. `(\w+)`", section)
        with self.lock:
            i = self.calls
            self.calls += 1
            self.prompts.append(user)
            agg = "[[ ## candidate_solutions ## ]]" in user
            if agg:
                self.agg_calls += 1
            else:
                g = self.gen_calls
                self.gen_calls += 1
        self._enter()
        time.sleep(0.01)
        self._leave()
        if self.garbage is not None and self.garbage(i):
            text = "I do not follow formats."
        else:
            if agg:
                found = CAND_ANSWER.findall(user.split("[[ ## candidate_solutions ## ]]")[1])
                answer = Counter(a.strip() for a in found).most_common(1)[0][0]
            else:
                answer = self.answers[g % len(self.answers)]
            values = {"reasoning": "step by step", "answer": answer, **self.extra}
            names = outputs or ["reasoning", "answer"]
            text = "\n\n".join(f"[[ ## {k} ## ]]\n{values.get(k, 'x')}" for k in names)
            text += "\n\n[[ ## completed ## ]]"
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(text)]),
                        finish_reason="stop", usage=Usage(input_tokens=10, output_tokens=5,
                                                          total_tokens=15))

    def _enter(self) -> None:
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)

    def _leave(self) -> None:
        with self.lock:
            self.active -= 1

    def close(self) -> None:
        pass


class AsyncScriptedLM:
    def __init__(self, sync: ScriptedLM) -> None:
        self.sync = sync

    async def complete(self, request):
        self.sync._enter()
        await asyncio.sleep(0.02)
        self.sync._leave()
        return self.sync.complete(request)

    async def aclose(self) -> None:
        pass


def make_lm(engine: ScriptedLM, **kwargs):
    return dspy.LM("openai/scripted", engine=engine, async_engine=AsyncScriptedLM(engine),
                   **kwargs)


@pytest.fixture(autouse=True)
def fresh_cache():
    """A fresh in-memory DSPy cache per test (no disk cache: reruns must not hit old entries)."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    yield


def rollout_ids(lm) -> list:
    return [h["kwargs"].get("rollout_id") for h in lm.history]


# ------------------------------------------------------------------ structure


def test_inner_predictors_are_visible_and_distinct():
    rsa = RSA("question -> answer", population=4, aggregation_size=2, steps=2)
    names = [n for n, _ in rsa.named_predictors()]
    assert names == ["generate.predict", "aggregate.predict"]
    gen, agg = rsa.generate.predict.signature, rsa.aggregate.predict.signature
    assert list(gen.input_fields) == ["question"]
    assert list(agg.input_fields) == ["question", "candidate_solutions"]
    assert list(agg.output_fields) == list(gen.output_fields) == ["reasoning", "answer"]
    assert not gen.equals(agg)  # GEPA tells the predictors apart by signature
    assert "candidate solutions" in agg.instructions and "different approach" in agg.instructions
    refine = RSA("question -> answer", population=2, aggregation_size=1, steps=2)
    assert "one candidate solution" in refine.aggregate.predict.signature.instructions


def test_user_instructions_are_kept_for_aggregation():
    class Classify(dspy.Signature):
        """Classify the sentiment of the review."""

        review: str = dspy.InputField()
        label: str = dspy.OutputField()

    rsa = RSA(Classify, population=2, aggregation_size=2, steps=2, reasoning=False)
    assert [n for n, _ in rsa.named_predictors()] == ["generate.predict", "aggregate.predict"]
    assert rsa.answer_field == "label"
    text = rsa.aggregate.predict.signature.instructions
    assert text.startswith("The task: Classify the sentiment") and "candidate solutions" in text


# ------------------------------------------------------------------ calls, cache, usage


def test_exactly_n_times_t_calls_and_cache_cannot_collapse_them():
    eng = ScriptedLM()
    lm = make_lm(eng)
    rsa = RSA("question -> answer", population=4, aggregation_size=2, steps=3)
    with dspy.context(lm=lm):
        pred = rsa(question="Pick a letter")
    assert eng.calls == 12 and eng.gen_calls == 4 and eng.agg_calls == 8
    ids = rollout_ids(lm)
    assert len(ids) == 12 and len(set(ids)) == 12  # identical first-step prompts, distinct calls
    assert len(pred.completions) == 4
    assert [s["requested"] for s in pred.rsa.steps] == [4, 4, 4]

    with dspy.context(lm=lm):  # same call again: DSPy's cache answers every request
        again = rsa(question="Pick a letter")
    assert eng.calls == 12
    assert again.completions.answer == pred.completions.answer and again.answer == pred.answer

    round5 = lm.copy(rollout_id=5)  # as BootstrapFewShot does for its later rounds
    with dspy.context(lm=round5):
        rsa(question="Pick a letter")
    assert eng.calls == 24
    assert len(set(rollout_ids(round5))) == 12 and not set(rollout_ids(round5)) & set(ids)


def test_usage_totals_equal_the_sum_over_calls_sync_and_async():
    eng = ScriptedLM()
    lm = make_lm(eng)
    rsa = RSA("question -> answer", population=3, aggregation_size=2, steps=2, num_threads=3)
    with dspy.context(lm=lm, track_usage=True):
        pred = rsa(question="q1")
    usage = pred.get_lm_usage()["openai/scripted"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (60, 30)
    assert [s["prompt_tokens"] for s in pred.rsa.steps] == [30, 30]
    assert pred.rsa.usage.calls == 6 and pred.rsa.usage.total_tokens == 90
    assert eng.max_active > 1  # the thread pool ran calls concurrently

    eng.max_active = 0

    async def main():
        with dspy.context(lm=lm, track_usage=True):
            return await rsa.acall(question="q2")

    apred = asyncio.run(main())
    assert eng.calls == 12
    ausage = apred.get_lm_usage()["openai/scripted"]
    assert (ausage["prompt_tokens"], ausage["completion_tokens"]) == (60, 30)
    assert eng.max_active > 1 and len(apred.completions) == 3


def test_usage_is_tracked_inside_an_outer_tracker():
    eng = ScriptedLM()
    rsa = RSA("question -> answer", population=2, aggregation_size=1, steps=2)
    with dspy.context(lm=make_lm(eng)), dspy.track_usage() as tracker:
        rsa(question="q")
    assert tracker.get_total_tokens()["openai/scripted"]["total_tokens"] == 4 * 15


# ------------------------------------------------------------------ voting


def test_majority_keeps_short_letter_answers():
    eng = ScriptedLM(answers=["A", "B", "A", "C", "A"])
    rsa = RSA("question -> answer", population=5, aggregation_size=2, steps=1)
    with dspy.context(lm=make_lm(eng)):
        pred = rsa(question="Which option?")
    assert pred.answer == "A"
    assert pred.rsa.votes == {"A": 3, "B": 1, "C": 1}
    assert pred.completions.answer[pred.rsa.chosen] == "A"


def test_majority_on_typed_outputs_returns_the_typed_value():
    eng = ScriptedLM(answers=["3", "7", "7"])
    rsa = RSA("question -> answer: int", population=3, aggregation_size=2, steps=1)
    with dspy.context(lm=make_lm(eng)):
        pred = rsa(question="How many?")
    assert pred.answer == 7 and isinstance(pred.answer, int)
    assert sorted(pred.completions.answer) == [3, 7, 7]

    eng = ScriptedLM(answers=["[2, 1]", "[1, 2]", "[1,2]"])
    rsa = RSA("question -> answer: list[int]", population=3, aggregation_size=2, steps=1)
    with dspy.context(lm=make_lm(eng)):
        pred = rsa(question="Which?")
    assert pred.answer == [1, 2] and pred.rsa.votes == {"[2, 1]": 1, "[1, 2]": 2}
    assert vote_key([1, 2]) == vote_key([1, 2]) != vote_key([2, 1])


def test_random_selection_picks_a_population_member():
    eng = ScriptedLM(answers=["A", "B", "C", "D"])
    rsa = RSA("question -> answer", population=4, aggregation_size=2, steps=1, selection="random",
              seed=3)
    with dspy.context(lm=make_lm(eng)):
        pred = rsa(question="Any")
    assert pred.answer == pred.completions.answer[pred.rsa.chosen]
    assert sorted(pred.completions.answer) == ["A", "B", "C", "D"]


# ------------------------------------------------------------------ aggregation prompts


def test_aggregation_gets_every_input_and_k_parents_with_all_fields():
    eng = ScriptedLM(answers=["x", "y"], extra={"confidence": "0.5"})
    rsa = RSA("context, question -> answer, confidence: float", population=3, aggregation_size=2,
              steps=2)
    with dspy.context(lm=make_lm(eng)):
        pred = rsa(context="The sky is blue.", question="What colour?")
    assert rsa.answer_field == "answer" and pred.confidence == 0.5
    aggs = [p for p in eng.prompts if "candidate_solutions" in p]
    assert len(aggs) == 3
    for prompt in aggs:
        assert "The sky is blue." in prompt and "What colour?" in prompt
        shown = prompt.split("[[ ## candidate_solutions ## ]]")[1]
        assert "[1]" in shown and "[2]" in shown and "[3]" not in shown
        assert shown.count("confidence: 0.5") == 2 and shown.count("reasoning: step by step") == 2


def test_unparsable_generations_become_counted_failures():
    eng = ScriptedLM(answers=["A"], garbage=lambda i: i in (0, 2))
    rsa = RSA("question -> answer", population=4, aggregation_size=2, steps=2)
    with dspy.context(lm=make_lm(eng), adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        pred = rsa(question="q")
    assert [s["failed"] for s in pred.rsa.steps] == [2, 0]
    assert pred.rsa.steps[0]["population"] == 2 and eng.calls == 8
    assert pred.answer == "A"
    errors = [c.completion.error for c in pred.rsa.population]
    assert errors == [None] * 4


def test_all_failed_population_returns_none_fields_not_an_exception():
    eng = ScriptedLM(garbage=lambda i: True)
    rsa = RSA("question -> answer", population=3, aggregation_size=2, steps=3)
    with dspy.context(lm=make_lm(eng), adapter=dspy.ChatAdapter(use_json_adapter_fallback=False)):
        pred = rsa(question="q")
    assert eng.calls == 3  # nothing to aggregate after an all-failed first step
    assert pred.answer is None and pred.rsa.failed
    assert len(pred.completions) == 3 and pred.completions.answer == [None] * 3
    assert all("AdapterParseError" in c.completion.error for c in pred.rsa.population)


def test_json_fallback_calls_share_the_rollout_id():
    # ChatAdapter fails to parse -> JSONAdapter retries the same call (same rollout_id)
    eng = ScriptedLM(answers=["A"], garbage=lambda i: True)
    lm = make_lm(eng)
    rsa = RSA("question -> answer", population=2, aggregation_size=1, steps=1)
    with dspy.context(lm=lm):
        pred = rsa(question="q")
    assert eng.calls == 4 and pred.rsa.steps[0]["failed"] == 2
    assert sorted(Counter(rollout_ids(lm)).values()) == [2, 2]


# ------------------------------------------------------------------ user modules


class TwoStep(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.solve = dspy.ChainOfThought("question -> answer")

    def forward(self, question):
        return self.solve(question=question)


def test_wrapping_a_user_module_with_a_pinned_lm_still_samples_distinct_calls():
    eng = ScriptedLM(answers=["B", "B", "C"])
    lm = make_lm(eng)
    inner = TwoStep()
    inner.solve.predict.lm = lm  # pinned: dspy.context(lm=...) copies would not reach it
    rsa = RSA(inner, population=3, aggregation_size=2, steps=2)
    # the inner signature already has `reasoning`; the aggregator is still `aggregate.predict`
    assert [n for n, _ in rsa.named_predictors()] == ["generate.solve.predict", "aggregate.predict"]
    with dspy.context(lm=lm):
        pred = rsa(question="q")
    assert eng.calls == 6 and len(set(rollout_ids(lm))) == 6
    assert pred.answer == Counter(pred.completions.answer).most_common(1)[0][0]

    async def main():
        with dspy.context(lm=lm):
            return await rsa.acall(question="q2")

    apred = asyncio.run(main())
    assert eng.calls == 12 and len(apred.completions) == 3 and apred.answer in {"B", "C"}


# ------------------------------------------------------------------ optimizers, state


def _trainset():
    return [dspy.Example(question=f"q{i}", answer="A").with_inputs("question") for i in range(3)]


def test_bootstrap_fewshot_collects_demos_for_both_predictors():
    eng = ScriptedLM(answers=["A"])
    student = RSA("question -> answer", population=3, aggregation_size=2, steps=2)
    opt = dspy.BootstrapFewShot(metric=lambda ex, pred, trace=None: pred.answer == ex.answer,
                                max_bootstrapped_demos=2, max_labeled_demos=0)
    with dspy.context(lm=make_lm(eng)):
        compiled = opt.compile(student, trainset=_trainset())
    gen, agg = compiled.generate.predict.demos, compiled.aggregate.predict.demos
    assert gen and agg
    assert all(d.get("augmented") for d in gen + agg)
    assert "candidate_solutions" in agg[0] and isinstance(agg[0]["candidate_solutions"], list)
    assert "candidate_solutions" not in gen[0]


def test_save_load_round_trip_gives_identical_calls(tmp_path):
    eng = ScriptedLM(answers=["A", "B", "A"])
    lm = make_lm(eng)
    rsa = RSA("question -> answer", population=3, aggregation_size=2, steps=2)
    rsa.aggregate.predict.signature = rsa.aggregate.predict.signature.with_instructions("Tuned.")
    rsa.generate.predict.demos = [dspy.Example(question="q0", reasoning="r", answer="A")]
    path = tmp_path / "rsa.json"
    rsa.save(str(path))
    with dspy.context(lm=lm):
        before = rsa(question="q")
    calls = eng.calls

    loaded = RSA("question -> answer", population=3, aggregation_size=2, steps=2)
    loaded.load(str(path))
    assert loaded.aggregate.predict.signature.instructions == "Tuned."
    assert loaded.dump_state() == rsa.dump_state()
    with dspy.context(lm=lm):
        after = loaded(question="q")
    assert eng.calls == calls  # every request identical to the original's: all cache hits
    assert after.completions.answer == before.completions.answer and after.answer == before.answer


def test_one_predictor_name_however_rsa_is_built_so_state_moves_between_them(tmp_path):
    """RSA(ChainOfThought(sig)) named its aggregator `aggregate`, so its state did not load into
    RSA(sig) (KeyError); its instructions began with DSPy's default preamble (issue 22, item 6)."""
    sig = "question -> answer"
    built = {"signature": RSA(sig, population=2, aggregation_size=2, steps=2),
             "chain_of_thought": RSA(dspy.ChainOfThought(sig), population=2, aggregation_size=2,
                                     steps=2),
             "no_reasoning": RSA(sig, population=2, aggregation_size=2, steps=2, reasoning=False)}
    for name, rsa in built.items():
        assert [n for n, _ in rsa.named_predictors()] == ["generate.predict",
                                                          "aggregate.predict"], name
        text = rsa.aggregate.predict.signature.instructions
        assert not text.startswith("The task:") and "Given the fields" not in text, (name, text)
    cot = built["chain_of_thought"]
    cot.aggregate.predict.signature = cot.aggregate.predict.signature.with_instructions("Tuned.")
    cot.generate.predict.demos = [dspy.Example(question="q0", reasoning="r", answer="A")]
    path = tmp_path / "cot.json"
    cot.save(str(path))
    plain = RSA(sig, population=2, aggregation_size=2, steps=2)
    plain.load(str(path))
    assert plain.aggregate.predict.signature.instructions == "Tuned."
    assert plain.generate.predict.demos[0]["answer"] == "A"


class DraftThenFinal(dspy.Module):
    """A pipeline whose last predictor reads the first one's output."""

    def __init__(self) -> None:
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.final = dspy.Predict("question, draft -> answer")

    def forward(self, question):
        draft = self.draft(question=question).draft
        return self.final(question=question, draft=draft)


def test_a_pipeline_whose_last_predictor_takes_other_inputs_names_signature():
    with pytest.raises(TypeError, match=r"missing input field\(s\) \['draft'\].*signature="):
        RSA(DraftThenFinal(), population=2, aggregation_size=2, steps=1)(question="q")
    eng = ScriptedLM(answers=["A", "A"], extra={"draft": "d"})
    rsa = RSA(DraftThenFinal(), population=2, aggregation_size=2, steps=2,
              signature="question -> answer")
    with dspy.context(lm=make_lm(eng)):
        pred = rsa(question="q")
    assert pred.answer == "A" and eng.calls == 2 * 2 + 2  # 2 calls per first-step sample


def test_copies_for_optimizers():
    rsa = RSA("question -> answer", population=2, aggregation_size=2, steps=2)
    for clone in (copy.deepcopy(rsa), rsa.deepcopy(), rsa.reset_copy()):
        assert [n for n, _ in clone.named_predictors()] == ["generate.predict", "aggregate.predict"]
        assert clone.config == rsa.config and clone.generate is not rsa.generate


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("kwargs, message", [
    (dict(population=0), "population must be >= 1"),
    (dict(population=2, aggregation_size=3), "aggregation_size must be between 1 and population"),
    (dict(steps=0), "steps must be >= 1"),
    (dict(population="many"), "population must be an integer"),
    (dict(selection="best"), "selection must be one of majority, random"),
    (dict(temperature=-1), "temperature must be >= 0"),
    (dict(top_p=2), "top_p must be in (0, 1]"),
    (dict(num_threads=0), "num_threads must be >= 1"),
    (dict(kind="auto"), "kind must be a task kind"),
    (dict(answer_field="nope"), "answer_field must be one of the output fields (answer)"),
])
def test_bad_arguments_fail_at_construction(kwargs, message):
    args = {"population": 4, "aggregation_size": 2, "steps": 2, **kwargs}
    with pytest.raises(ConfigError) as err:
        RSA("question -> answer", **args)
    assert message in str(err.value)


def test_bad_signatures_and_inputs():
    with pytest.raises(ConfigError, match="signature_or_module must be"):
        RSA(42)
    with pytest.raises(ConfigError, match="not a valid signature"):
        RSA("question answer")
    with pytest.raises(ConfigError, match="reserved"):
        RSA("question, candidate_solutions -> answer")
    rsa = RSA("question -> answer", population=2, aggregation_size=1, steps=1)
    with pytest.raises(TypeError, match=r"unexpected input field\(s\) \['query'\]"):
        rsa(question="x", query="x")
    with pytest.raises(TypeError, match=r"missing input field\(s\) \['question'\]"):
        rsa()


# ------------------------------------------------------------------ dspy.RSA


def test_install_never_replaces_an_existing_rsa():
    fake = types.ModuleType("fake_dspy")
    fake.RSA = "upstream"
    install(fake)
    assert fake.RSA == "upstream"
    lazy = types.ModuleType("lazy_dspy")  # an RSA that the module's own __getattr__ provides
    lazy.__getattr__ = lambda name: "upstream" if name == "RSA" else None
    install(lazy)
    assert lazy.RSA == "upstream"
    empty = types.ModuleType("empty_dspy")
    install(empty)
    install(empty)  # again: no second wrapper
    assert empty.RSA is RSA
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        empty.nothing  # noqa: B018
    assert dspy.RSA is RSA and rsa_dspy.RSA is RSA


def _fresh(code: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", **env}
    if not env.get("RSA_PLUGINS_NO_HOOK"):
        full.pop("RSA_PLUGINS_NO_HOOK", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=300)


def test_hook_installs_dspy_rsa_in_a_fresh_interpreter():
    out = _fresh("import rsa_plugins._hooks as h; h.install(); import dspy; print(dspy.RSA)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "<class 'rsa_plugins.adapters.dspy.module.RSA'>"


def test_pth_start_up_hook_gives_plain_import_dspy_rsa():
    import site

    roots = site.getsitepackages() + [site.getusersitepackages()]
    if not any(os.path.exists(os.path.join(r, "rsa_plugins_startup.pth")) for r in roots):
        reason = "the rsa_plugins_startup.pth start-up hook is not installed here"
        if os.environ.get("CI"):  # CI installs the package: a missing hook is a bug there
            pytest.fail(reason)
        pytest.skip(reason)
    out = _fresh("import dspy; print(dspy.RSA)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "<class 'rsa_plugins.adapters.dspy.module.RSA'>"
    off = _fresh("import dspy; print(hasattr(dspy, 'RSA'))", RSA_PLUGINS_NO_HOOK="1")
    assert off.returncode == 0 and off.stdout.strip() == "False"


def test_missing_credentials_stop_the_run_with_one_line(monkeypatch):
    """Every call would fail the same way: the first such error ends the run, naming the key."""
    from rsa_plugins import EngineError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rsa = RSA("question -> answer", population=4, aggregation_size=2, steps=3)
    with dspy.context(lm=dspy.LM("openai/gpt-4o-mini")):
        with pytest.raises(EngineError) as info:
            rsa(question="What is 2 + 2?")
    message = str(info.value)
    assert "OPENAI_API_KEY" in message and "\n" not in message


# ------------------------------------------------------------------ spending less


def test_early_stop_and_budget_generations_per_call(capsys):
    agree = ScriptedLM(answers=("A",))
    rsa = RSA("question -> answer", population=4, aggregation_size=2, steps=4,
              early_stop="unanimous")
    with dspy.context(lm=make_lm(agree)):
        pred = rsa(question="Pick a letter")
    assert agree.calls == 4 and pred.answer == "A"
    assert (pred.rsa.stopped.step, pred.rsa.stopped.reason) == (1, "unanimous")
    assert len(pred.rsa.steps) == 1 and pred.rsa.steps[-1]["stop"] == "unanimous"

    eng = ScriptedLM(answers=("A", "B", "C", "D"))
    rsa = RSA("question -> answer", population=4, aggregation_size=2, steps=4,
              budget_generations=10)
    with dspy.context(lm=make_lm(eng)):
        first = rsa(question="q1")
        assert eng.calls == 8  # two steps of 4; a third would make 12
        second = rsa(question="q2")  # the budget is per call
    assert eng.calls == 16
    for pred in (first, second):
        assert (pred.rsa.stopped.step, pred.rsa.stopped.reason) == (2, "budget")
        assert pred.answer is not None and len(pred.completions) == 4
    err = capsys.readouterr().err.splitlines()
    forecasts = [ln for ln in err if ln.startswith("rsa: 1 problem(s) x N=4 x T=4: at most 16")]
    assert len(forecasts) == 2 and all(ln.endswith("budget: 10 calls") for ln in forecasts)


class BytesLM(ScriptedLM):
    """Reports a token per byte of every message it was sent (system and user turns) and of
    its reply: the most a byte-level tokenizer makes of them."""

    def complete(self, request):
        out = super().complete(request)
        system = request.system if isinstance(request.system, str) else "".join(
            p.text for p in (request.system or []))
        sent = len(system.encode()) + sum(len((m.text or "").encode()) for m in request.messages)
        got = len((out.message.text or "").encode())
        return dataclasses.replace(out, usage=Usage(input_tokens=sent, output_tokens=got,
                                                    total_tokens=sent + got))


def test_budget_tokens_bounds_the_prompts_dspy_builds():
    """The worst case of a call is what DSPy's adapter sends (field instructions, demos), not
    the bare inputs: with usage counted per byte, no budget is ever exceeded."""
    args = dict(population=4, aggregation_size=2, steps=4, max_tokens=400)
    eng = BytesLM(answers=("A", "B", "C", "D"))
    with dspy.context(lm=make_lm(eng)):
        full = RSA("question -> answer", **args)(question="Pick a letter")
    used = full.rsa.usage.total_tokens
    assert eng.calls == 16 and used > 16 * 400  # the prompts are far longer than the inputs
    for budget in range(used // 8, used, used // 8):
        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
        eng = BytesLM(answers=("A", "B", "C", "D"))
        rsa = RSA("question -> answer", budget_tokens=budget, **args)
        with dspy.context(lm=make_lm(eng)):
            try:
                pred = rsa(question="Pick a letter")
            except ConfigError as exc:  # too small for the first step: refused before a call
                assert "first step" in str(exc) and eng.calls == 0
                continue
        assert pred.rsa.usage.total_tokens <= budget, budget
        assert pred.rsa.stopped is not None and pred.rsa.stopped.reason == "budget"


@pytest.mark.parametrize("kwargs, message", [
    (dict(early_stop="unanimus"), "early_stop must be one of never, unanimous, consensus"),
    (dict(early_stp="unanimous"), "unknown option 'early_stp' (did you mean 'early_stop'?)"),
    (dict(budget_generation=8), "did you mean 'budget_generations'"),
    (dict(early_stop_patience=0), "early_stop_patience must be >= 1"),
    (dict(early_stop_confidence=0.3), "early_stop_confidence must be between 0.5 and 1"),
    (dict(budget_tokens=0), "budget_tokens must be >= 1"),
    (dict(budget_tokens=1000), "budget_tokens needs max_tokens"),
    (dict(islands=2, population=4, aggregation_size=2, steps=1), "islands=2 needs steps >= 2"),
])
def test_bad_spending_arguments_fail_at_construction(kwargs, message):
    args = {"population": 4, "aggregation_size": 2, "steps": 2, **kwargs}
    with pytest.raises(ConfigError) as err:
        RSA("question -> answer", **args)
    assert message in str(err.value)


def test_token_budgets_need_a_signature_not_a_module():
    with pytest.raises(ConfigError, match="budget_usd needs a signature"):
        RSA(dspy.ChainOfThought("question -> answer"), population=2, aggregation_size=2,
            steps=2, max_tokens=100, budget_usd=1.0)
