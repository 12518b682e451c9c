"""The Inspect AI adapter on Inspect's mockllm provider (scripted outputs, no network)."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("inspect_ai")

from inspect_ai import Task, eval  # noqa: E402
from inspect_ai.dataset import Sample  # noqa: E402
from inspect_ai.model import ModelOutput, ModelUsage, get_model  # noqa: E402
from inspect_ai.scorer import includes  # noqa: E402
from inspect_ai.solver import SolverSpec, TaskState  # noqa: E402

from fakes import candidates_in, is_aggregation, mark, step_in  # noqa: E402
from rsa_plugins import ConfigError  # noqa: E402
from rsa_plugins.adapters.inspect import RSASolverError, answer_match, rsa  # noqa: E402
from rsa_plugins.adapters.inspect.problem import sample_problem  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
#: the `inspect` command of this interpreter's environment (works without an activated venv)
INSPECT = str(Path(sys.executable).parent / "inspect")
TASKS = REPO / "tasks" / "inspect"
USAGE = dict(input_tokens=10, output_tokens=5, total_tokens=15)


def load_task_module(name: str):
    spec = importlib.util.spec_from_file_location(f"inspect_task_{name}", TASKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reply(text: str, stop_reason: str = "stop") -> ModelOutput:
    out = ModelOutput.from_content("mockllm/model", text, stop_reason=stop_reason)
    out.usage = ModelUsage(**USAGE)  # without usage mockllm downloads a tiktoken encoding
    return out


class Mock:
    """A mockllm script: first-step calls answer by seed, aggregation calls vote their parents."""

    def __init__(self, first=lambda seed, text: "4", length=lambda seed, text: False):
        self.first, self.length = first, length
        self.calls: list[tuple[str, object]] = []

    def __call__(self, input, tools, tool_choice, config) -> ModelOutput:
        text = input[-1].text
        self.calls.append((text, config))
        if self.length(config.seed, text):
            return reply("This model's maximum context length is 2048 tokens.", "model_length")
        own = mark(config.seed, 0, step_in(text))  # a candidate's mark, on the line before its answer
        if is_aggregation(text):
            answers = re.findall(r"\[#[a-j./]+\]\nANSWER: (\S+)", text)
            assert len(answers) == len(candidates_in(text))
            answer = Counter(answers).most_common(1)[0][0]
            return reply(f"Combining the candidates {own}\nANSWER: {answer}")
        return reply(f"Thinking about it {own}\nANSWER: {self.first(config.seed, text)}")

    def model(self):
        return get_model("mockllm/model", custom_outputs=self)


def arithmetic(n: int = 2) -> Task:
    samples = [Sample(input=f"What is {i} + 4?", target=str(i + 4), id=f"s{i}") for i in range(n)]
    return Task(dataset=samples, scorer=includes())


def run_eval(task: Task, mock: Mock, tmp_path: Path, **kw):
    [log] = eval(task, model=mock.model(), log_dir=str(tmp_path), display="none", **kw)
    assert log.status == "success", log.error
    return log


def spans(sample) -> dict[str, object]:
    return {e.id: e for e in sample.events if e.event == "span_begin"}


def step_span(sample, event) -> str | None:
    """Name of the ``rsa_step`` span an event sits in (through nested spans)."""
    table, span_id = spans(sample), event.span_id
    while span_id is not None:
        begin = table[span_id]
        if begin.type == "rsa_step":
            return begin.name
        span_id = begin.parent_id
    return None


# ------------------------------------------------------------------------------- the algorithm


def test_n_times_t_model_calls_in_step_spans_with_metrics_and_store(tmp_path):
    mock = Mock(first=lambda seed, text: "7" if seed % 3 == 0 else re.search(r"(\d+) \+ 4", text)[1])
    log = run_eval(arithmetic(2), mock, tmp_path,
                   solver=rsa(population=4, aggregation_size=2, steps=3))
    assert len(mock.calls) == 2 * 4 * 3
    for s in log.samples:
        models = [e for e in s.events if e.event == "model"]
        assert len(models) == 12
        assert Counter(step_span(s, e) for e in models) == {"step 1": 4, "step 2": 4, "step 3": 4}
        infos = [e for e in s.events if e.event == "info" and e.source == "rsa"]
        assert [i.data["step"] for i in infos] == [1, 2, 3]
        assert [step_span(s, i) for i in infos] == ["step 1", "step 2", "step 3"]
        assert all(i.data["population"] == 4 and "mean_accuracy" in i.data for i in infos)
        assert s.model_usage["mockllm/model"].total_tokens == 12 * USAGE["total_tokens"]
        store = {k.split(":", 1)[1]: v for k, v in s.store.items() if k.startswith("RSAStore:")}
        assert len(store["population"]) == 4 and len(store["steps"]) == 3
        assert sum(store["votes"].values()) == 4
        chosen = store["population"][store["chosen"]]
        assert s.output.completion == chosen["text"]
        assert store["answer"] == chosen["answer"] == max(store["votes"], key=store["votes"].get)
        assert s.messages[-1].role == "assistant" and s.messages[-1].text == chosen["text"]
        assert s.scores["includes"].value in ("C", "I")
        assert (s.scores["includes"].value == "C") == (store["answer"] == s.target)
    assert log.stats.model_usage["mockllm/model"].total_tokens == 24 * USAGE["total_tokens"]


def test_every_call_has_its_own_seed_and_aggregations_show_k_candidates(tmp_path):
    mock = Mock()
    run_eval(arithmetic(1), mock, tmp_path, solver=rsa(population=4, aggregation_size=3, steps=2))
    seeds = [cfg.seed for _, cfg in mock.calls]
    assert len(set(seeds)) == len(seeds) == 8
    assert all(cfg.temperature == 1.0 for _, cfg in mock.calls)
    aggs = [text for text, _ in mock.calls if is_aggregation(text)]
    assert len(aggs) == 4 and all(len(candidates_in(t)) == 3 for t in aggs)
    firsts = [text for text, _ in mock.calls if not is_aggregation(text)]
    assert all(t.startswith("What is 0 + 4?") and "ANSWER:" in t for t in firsts)

    # a global --seed changes the draws but never collapses the population
    mock2 = Mock()
    run_eval(arithmetic(1), mock2, tmp_path, seed=7,
             solver=rsa(population=4, aggregation_size=3, steps=2))
    seeds2 = [cfg.seed for _, cfg in mock2.calls]
    assert len(set(seeds2)) == 8 and set(seeds2).isdisjoint(seeds)


def test_majority_of_the_final_population_is_the_output(tmp_path):
    # about 1 in 4 first-step samples is wrong; aggregation calls vote, so "i+4" wins
    def first(seed, text):
        i = int(re.search(r"What is (\d+)", text)[1])
        return str(i + 4) if seed % 4 else "99"

    mock = Mock(first=first)
    log = run_eval(arithmetic(3), mock, tmp_path, solver=rsa(population=4, aggregation_size=3,
                                                             steps=2))
    for s in log.samples:
        assert s.store["RSAStore:answer"] == s.target
        assert s.scores["includes"].value == "C"


def test_task_temperature_max_tokens_and_explicit_arguments(tmp_path, caplog):
    mock = Mock()
    with caplog.at_level(logging.WARNING):
        run_eval(arithmetic(1), mock, tmp_path, temperature=0.0, max_tokens=33,
                 solver=rsa(population=2, aggregation_size=2, steps=1))
    assert {(cfg.temperature, cfg.max_tokens) for _, cfg in mock.calls} == {(1.0, 33)}
    assert "temperature 0" in caplog.text

    mock = Mock()
    run_eval(arithmetic(1), mock, tmp_path, temperature=0.7,
             solver=rsa(population=2, aggregation_size=2, steps=1))
    assert {cfg.temperature for _, cfg in mock.calls} == {0.7}

    mock = Mock()
    run_eval(arithmetic(1), mock, tmp_path, temperature=0.7, max_tokens=33,
             solver=rsa(population=2, aggregation_size=2, steps=1, temperature=0.5, max_tokens=20))
    assert {(cfg.temperature, cfg.max_tokens) for _, cfg in mock.calls} == {(0.5, 20)}


def test_model_length_outputs_are_counted_and_never_candidates(tmp_path):
    mock = Mock(length=lambda seed, text: is_aggregation(text) and seed % 2 == 0)
    log = run_eval(arithmetic(2), mock, tmp_path, solver=rsa(population=6, aggregation_size=2,
                                                             steps=3))
    total = 0
    for s in log.samples:
        models = [e for e in s.events if e.event == "model"]
        overflow = [e for e in models if e.output.stop_reason == "model_length"]
        total += len(overflow)
        infos = [e.data for e in s.events if e.event == "info" and e.source == "rsa"]
        per_step = Counter(step_span(s, e) for e in overflow)
        assert [i["failed"] for i in infos] == [per_step.get(f"step {t}", 0) for t in (1, 2, 3)]
        assert [i["model_length"] for i in infos] == [i["failed"] for i in infos]
        assert s.store["RSAStore:model_length"] == len(overflow)
        assert infos[-1]["population"] == 6 - per_step.get("step 3", 0)
        pop = s.store["RSAStore:population"]
        assert all("maximum context length" not in c["text"] for c in pop)
        assert "maximum context length" not in s.output.completion
    assert total > 0


def test_token_limit_still_leaves_a_scorable_answer(tmp_path):
    mock = Mock()
    task = arithmetic(1)
    task.token_limit = 4 * USAGE["total_tokens"] + 1  # step 1 fits, step 2 trips the limit
    log = run_eval(task, mock, tmp_path, solver=rsa(population=4, aggregation_size=2, steps=3))
    [s] = log.samples
    assert s.limit is not None and s.limit.type == "token"
    assert len(mock.calls) < 12
    assert s.output.completion.endswith("ANSWER: 4")
    assert s.scores["includes"].value == "C"
    assert len(s.store["RSAStore:steps"]) == 1


# ------------------------------------------------------------------------------- multiple choice


def mc_mock(wrong: bool = False) -> Mock:
    questions = load_task_module("mc_offline").QUESTIONS

    def first(seed, text):
        for q, _, target in questions:
            if q in text:
                return "A" if wrong and target != "A" else ("B" if wrong else target)
        raise AssertionError(f"unexpected prompt {text!r}")

    return Mock(first=first)


@pytest.mark.parametrize("wrong", [False, True])
def test_multiple_choice_marks_choices_so_choice_scorer_scores_the_rsa_answer(tmp_path, wrong):
    mod = load_task_module("mc_offline")
    mock = mc_mock(wrong)
    log = run_eval(mod.mc_offline(), mock, tmp_path, limit=3,
                   solver=rsa(population=3, aggregation_size=2, steps=2))
    first = next(text for text, _ in mock.calls if not is_aggregation(text))
    assert "\nA) 10\nB) 12\nC) 13\nD) 15\n" in first and "ANSWER: X" in first
    for s in log.samples:
        answer = s.store["RSAStore:answer"]
        assert answer in "ABCD" and s.scores["choice"].answer == answer
        assert s.scores["choice"].value == ("I" if wrong else "C")
        assert (answer == s.target) == (not wrong)


def test_task_with_its_own_solver_runs_unchanged(tmp_path):
    mod = load_task_module("mc_offline")
    mock = mc_mock()
    log = run_eval(mod.mc_offline(), mock, tmp_path, limit=3)
    assert [step.solver for step in log.plan.steps] == ["multiple_choice"]
    assert len(mock.calls) == 3
    for s in log.samples:
        assert not any(k.startswith("RSAStore:") for k in s.store)
        assert not any(e.event == "span_begin" and e.type == "rsa_step" for e in s.events)
        assert s.scores["choice"].value == "C"


# ------------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("args, message", [
    ({"aggregation_size": 9, "population": 4}, "aggregation_size must be between 1 and population (4), got 9"),
    ({"population": 0}, "population must be >= 1, got 0"),
    ({"steps": "two"}, "steps must be an integer, got 'two'"),
    ({"population": ["4", "8"]}, "population must be an integer"),
    ({"selection": "best"}, "selection must be one of majority, random"),
    ({"preset": "mc"}, "preset must be one of auto, none, math"),
    ({"view": "short"}, "view must be one of full, answer, tail"),
    ({"temperature": "hot"}, "temperature must be a number >= 0"),
    ({"include_reasoning": "maybe"}, "include_reasoning must be true or false"),
    ({"max_model_len": 10}, "max_model_len must be >= 64, got 10"),
    ({"template": "no slots"}, "template must contain the placeholder {problem}"),
    ({"early_stop": "unanimus"}, "early_stop must be one of never, unanimous, consensus"),
    ({"early_stp": "unanimous"}, "'early_stp' (did you mean 'early_stop'?)"),
    ({"early_stop_patience": 0}, "early_stop_patience must be >= 1, got 0"),
    ({"early_stop_confidence": 2}, "early_stop_confidence must be between 0.5 and 1"),
    ({"budget_generations": 0}, "budget_generations must be >= 1, got 0"),
    ({"budget_tokens": "lots"}, "budget_tokens must be an integer"),
    ({"budget_usd": -1}, "budget_usd must be >= 0"),
    ({"islands": 3, "population": 12, "aggregation_size": 2}, "islands must be a power of 2"),
])
def test_bad_arguments_fail_when_the_solver_is_built(args, message):
    with pytest.raises(RSASolverError) as err:
        rsa(**args)
    assert message in str(err.value)
    assert isinstance(err.value, ConfigError) and isinstance(err.value, ValueError)


def test_bad_arguments_through_the_registry_fail_before_any_model_call(tmp_path):
    mock = Mock()
    args = {"population": 4, "aggregation_size": 9}
    with pytest.raises(ValueError, match="aggregation_size must be between 1 and population"):
        eval(arithmetic(1), model=mock.model(), solver=SolverSpec("rsa", args, args),
             log_dir=str(tmp_path), display="none")
    assert mock.calls == []


def test_yaml_typed_values_are_coerced(tmp_path):
    mock = Mock()
    args = {"population": 3.0, "aggregation_size": "2", "steps": 2, "seed": None}
    log = run_eval(arithmetic(1), mock, tmp_path, solver=SolverSpec("rsa_plugins/rsa", args, args))
    assert len(mock.calls) == 6
    assert log.samples[0].store["RSAStore:config"]["population"] == 3


@pytest.mark.parametrize("name", ["rsa", "rsa_plugins/rsa"])
def test_solver_resolves_by_bare_and_package_name(tmp_path, name):
    mock = Mock()
    args = {"population": 2, "aggregation_size": 1, "steps": 2}
    log = run_eval(arithmetic(1), mock, tmp_path, solver=SolverSpec(name, args, args))
    assert log.eval.solver == name
    assert [step.solver for step in log.plan.steps] == ["rsa_plugins/rsa"]
    assert len(mock.calls) == 4


def test_alias_never_replaces_an_existing_rsa():
    code = (
        "from inspect_ai.solver import solver\n"
        "from inspect_ai._util.registry import registry_lookup\n"
        "@solver(name='rsa')\n"
        "def other():\n"
        "    async def solve(state, generate):\n"
        "        return state\n"
        "    return solve\n"
        "mine = registry_lookup('solver', 'rsa')\n"
        "import rsa_plugins.adapters.inspect.registry as reg\n"
        "assert registry_lookup('solver', 'rsa') is mine, 'alias replaced an existing rsa'\n"
        "assert registry_lookup('solver', 'rsa_plugins/rsa') is not None\n"
        "assert reg.register_alias() is False\n"
        "assert reg.register_alias('rsa_alias_test') is True\n"
        "assert reg.register_alias('rsa_alias_test') is False\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_cli_rejects_bad_arguments_at_start_with_a_clear_message(tmp_path):
    cmd = [INSPECT, "eval", "tasks/inspect/mc_offline.py", "--solver", "rsa",
           "-S", "aggregation_size=9", "-S", "population=4", "--model", "mockllm/model",
           "--log-dir", str(tmp_path / "logs"), "--display", "plain"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "INSPECT_LOG_DIR": str(tmp_path / "logs")})
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode != 0
    assert ("Invalid argument to the rsa solver: aggregation_size must be between 1 and "
            "population (4), got 9") in text
    assert "Traceback" not in text
    assert not list((tmp_path / "logs").glob("*.eval"))


# ------------------------------------------------------------------------------- prompts, tasks


def state_for(sample: Sample) -> TaskState:
    from inspect_ai.model import ChatMessageUser
    from inspect_ai.scorer import Target

    return TaskState(model="mockllm/model", sample_id=sample.id or "x", epoch=1, input=sample.input,
                     messages=[ChatMessageUser(content=sample.input)], target=Target(sample.target),
                     choices=sample.choices, metadata=sample.metadata or {})


@pytest.mark.parametrize("sample, preset, kind, fragment", [
    (Sample(input="Q?", choices=["x", "y"], target="B"), "auto", "multiple_choice", "A) x\nB) y"),
    (Sample(input="Q?", target="3", metadata={"rsa_kind": "math"}), "auto", "math", "\\boxed{...}"),
    (Sample(input="Q? Give <answer></answer>.", target="3"), "auto", "reasoning_gym", None),
    (Sample(input="Q?", target="3"), "auto", "general", "ANSWER: <your final answer>"),
    (Sample(input="Q?", target="3"), "math", "math", "\\boxed{...}"),
    (Sample(input="Q?", target="3"), "none", "general", None),
])
def test_sample_problem_recreates_the_answer_format(sample, preset, kind, fragment):
    problem = sample_problem(state_for(sample), preset)
    assert problem.kind == kind
    assert problem.prompt.startswith(sample.input)
    if fragment is None:
        assert problem.prompt == sample.input
    else:
        assert fragment in problem.prompt


def test_hub_tasks_map_records_and_score_math_answers(tmp_path):
    aime = load_task_module("aime2025")
    hmmt = load_task_module("hmmt2025")
    s = aime.record_to_sample({"problem": "Find x.", "answer": "70", "id": "0"})
    assert (s.input, s.target, s.id, s.metadata) == ("Find x.", "70", "0", {"rsa_kind": "math"})
    s = hmmt.record_to_sample({"problem": "Find y.", "answer": "\\frac{1}{2}", "problem_idx": 3})
    assert (s.input, s.target, s.id) == ("Find y.", "\\frac{1}{2}", 3)

    task = Task(dataset=[Sample(input="Half of one?", target="\\frac{1}{2}",
                                metadata={"rsa_kind": "math"})], scorer=answer_match())
    prompts = []

    def script(input, tools, tool_choice, config):
        prompts.append(input[-1].text)
        return reply("So the result is \\boxed{0.5}")

    [log] = eval(task, model=get_model("mockllm/model", custom_outputs=script),
                 solver=rsa(population=2, aggregation_size=1, steps=2), log_dir=str(tmp_path),
                 display="none")
    assert log.status == "success"
    assert "\\boxed{...}" in prompts[0] and len(prompts) == 4
    assert log.samples[0].scores["answer_match"].value == "C"


def test_the_private_inspect_names_rsa_plugins_uses_are_still_there():
    """rsa_plugins.adapters.inspect._compat falls back quietly when Inspect moves a private
    name; this test is what notices: update _compat.py for the new place."""
    from rsa_plugins.adapters.inspect import _compat

    assert _compat.MISSING == []


def test_a_refused_key_stops_the_sample_at_once_with_one_line(tmp_path, monkeypatch):
    """A 401 would come back for every one of the N x T calls: the first one ends the sample
    with an error that says what to check, instead of a population of failures scored 0."""
    from openai_stub import StubServer

    with StubServer(faults={"401": 1.0}) as stub:
        monkeypatch.setenv("STUB_BASE_URL", stub.base_url)
        monkeypatch.setenv("STUB_API_KEY", "sk-wrong")
        task = Task(dataset=[Sample(input="What is 2 + 2?", target="4")], scorer=includes())
        [log] = eval(task, model="openai-api/stub/stub", model_base_url=stub.base_url,
                     log_dir=str(tmp_path), display="none",
                     solver=rsa(population=4, aggregation_size=2, steps=3), fail_on_error=True)
        seen = stub.stats()
    assert log.status == "error"
    assert "HTTP 401" in log.error.message and "\n" not in log.error.message.strip()
    assert 1 <= len(seen) <= 4, "no call after the first step's (in flight together)"


# ------------------------------------------------------------------------------- spending less


def agree_or_split(input, tools, tool_choice, config) -> ModelOutput:
    """Sample s0 ("What is 0 + 4?") always answers 4; any other answers its call's seed."""
    text = input[-1].text
    return reply(f"ANSWER: {4 if 'What is 0 + 4?' in text else config.seed}")


def test_early_stop_and_budget_per_sample_as_with_dash_s(tmp_path):
    """``-S early_stop=unanimous -S budget_generations=10``: s0 agrees at step 1 and stops there;
    s1 never agrees, and its budget pays for two steps of 4 (a third would need 12)."""
    args = {"population": 4, "aggregation_size": 2, "steps": 4, "early_stop": "unanimous",
            "budget_generations": 10}
    [log] = eval(arithmetic(2), model=get_model("mockllm/model", custom_outputs=agree_or_split),
                 solver=SolverSpec("rsa", args, args), log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error
    expected = {"s0": (4, {"step": 1, "reason": "unanimous"}),
                "s1": (8, {"step": 2, "reason": "budget"})}
    for s in log.samples:
        calls, stopped = expected[s.id]
        events = [e for e in s.events if e.event in ("model", "info")]
        models = [i for i, e in enumerate(events) if e.event == "model"]
        assert len(models) == calls <= args["budget_generations"]
        assert s.store["RSAStore:stopped"] == stopped
        infos = [(i, e.data) for i, e in enumerate(events) if e.event == "info"
                 and e.source == "rsa"]
        [(at, shown)] = [(i, d["forecast"]) for i, d in infos if "forecast" in d]
        shown = s.attachments.get(shown.removeprefix("attachment://"), shown)  # a long string
        assert at < models[0], "the worst case is shown before any call"
        assert shown.startswith("rsa: 1 problem(s) x N=4 x T=4: at most 16 calls, ")
        assert shown.endswith(" tokens; budget: 10 calls; early stop: unanimous")
        ends = [d for _, d in infos if "stopped" in d]
        assert ends == [{"stopped": stopped, "generations_saved": 4 * (4 - stopped["step"])}]
        assert len(s.store["RSAStore:steps"]) == stopped["step"]
        assert s.store["RSAStore:answer"] is not None and s.output.completion  # an answer


def test_budget_usd_uses_inspects_cost_data(tmp_path):
    """A step is paid for at its worst case (a token per prompt byte, plus max_tokens, a call):
    at $100 per million tokens, $0.2 pays for the first step's ~600 tokens but not for an
    aggregation step's ~3,000 (the aggregation wording around K candidates)."""
    from inspect_ai.model import ModelCost, ModelInfo, set_model_info
    from inspect_ai.model._model_info import _custom_models, clear_model_info_cache

    price = ModelCost(input=100, output=100, input_cache_write=0, input_cache_read=0)
    set_model_info("mockllm/model", ModelInfo(cost=price))
    try:
        log = run_eval(arithmetic(1), Mock(first=lambda seed, text: str(seed)), tmp_path,
                       solver=rsa(population=4, aggregation_size=2, steps=3, max_tokens=5,
                                  budget_usd=0.2))
    finally:
        _custom_models.pop("mockllm/model", None)
        clear_model_info_cache()
    [s] = log.samples
    models = [e for e in s.events if e.event == "model"]
    assert len(models) == 4  # the first step only
    assert len(models) * USAGE["total_tokens"] * 100 / 1e6 <= 0.2
    assert s.store["RSAStore:stopped"] == {"step": 1, "reason": "budget"}


def test_budget_usd_without_cost_data_is_one_clear_error(tmp_path):
    mock = Mock()
    [log] = eval(arithmetic(1), model=mock.model(), log_dir=str(tmp_path), display="none",
                 solver=rsa(population=2, aggregation_size=2, steps=2, budget_usd=1))
    assert log.status == "error" and mock.calls == []
    assert "budget_usd: no price is known for the model 'mockllm/model'" in log.error.message
