"""Spending less: early stop per problem, budgets for a run, islands, what-if replay."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict

import pytest

import rsa_plugins
from agree_stub import AgreeServer
from fakes import ScriptedEngine
from rsa_plugins import ConfigError, Problem, RSAConfig, RSALoop
from rsa_plugins.policies import EarlyStop, draw, island_count, majority_posterior
from rsa_plugins.trace import load
from rsa_plugins.types import Candidate, Completion
from rsa_plugins.whatif import parse_rule, replay

#: problem name -> the step from which its population agrees (0: never)
AGREE = {"a1": 1, "a2": 2, "a3": 3, "never": 0}
N, K, T = 4, 2, 5


def agree_problems(spec=AGREE):
    return [Problem(f"Problem {name} agrees from step {k}. Put the answer in \\boxed{{}}.",
                    id=name, target="42") for name, k in spec.items()]


def run_stub(server, problems, **options):
    options = {"population": N, "aggregation_size": K, "steps": T, "use_n": False,
               "progress": False, "max_tokens": 64, **options}
    return rsa_plugins.run(problems, model="hosted_vllm/agree", api_base=server.base_url,
                           **options)


@pytest.fixture(scope="module")
def server():
    with AgreeServer() as s:
        yield s


# ------------------------------------------------------------------ early stop


def test_unanimous_stops_exactly_where_the_population_agrees(server, tmp_path):
    full = run_stub(server, agree_problems(), trace=tmp_path / "full.jsonl")
    before = len(server.stats())
    early = run_stub(server, agree_problems(), early_stop="unanimous",
                     trace=tmp_path / "early.jsonl")
    made = server.stats()[before:]
    per = Counter(name for name, _ in made)
    for name, k in AGREE.items():
        expected = N * (k if k else T)  # stops after step k; never-agreeing runs all T steps
        assert per[name] == expected, (name, per)
    saved = sum(N * T - per[name] for name in AGREE)
    assert saved == sum(N * (T - k) for k in AGREE.values() if k)  # the prediction
    assert [r.answer for r in early] == [r.answer for r in full]
    for r, (name, k) in zip(early, AGREE.items()):
        if k:
            assert r.stopped is not None and (r.stopped.step, r.stopped.reason) == (k, "unanimous")
            assert r.steps[-1]["stop"] == "unanimous" and len(r.steps) == k
            assert r.usage.calls == N * k
        else:
            assert r.stopped is None and len(r.steps) == T
    results = {e["problem"]: e for e in load(tmp_path / "early.jsonl") if e["event"] == "result"}
    assert results["a2"]["stopped"] == {"step": 2, "reason": "unanimous"}
    assert results["never"]["stopped"] is None


def test_consensus_stops_no_later_than_unanimous_and_never_on_a_split(server):
    spec = {**AGREE, "late": 4}
    uni = run_stub(server, agree_problems(spec), early_stop="unanimous")
    con = run_stub(server, agree_problems(spec), early_stop="consensus")
    for u, c in zip(uni, con):
        assert len(c.steps) <= len(u.steps)
        if c.stopped is not None:  # it stopped on an agreeing population, never a split one
            assert c.steps[-1]["distinct_answers"] == 1 or c.steps[-1]["majority_share"] >= 0.75
    assert con[list(spec).index("never")].stopped is None


def test_patience_waits_for_consecutive_agreeing_steps():
    rule = EarlyStop("unanimous", patience=2)
    agree = {"population": 4, "no_answer": 0, "distinct_answers": 1, "majority_share": 1.0}
    split = {"population": 4, "no_answer": 0, "distinct_answers": 2, "majority_share": 0.5}
    assert rule.reason([agree]) is None
    assert rule.reason([split, agree]) is None
    assert rule.reason([split, agree, agree]) == "unanimous"


def test_unanswered_or_failed_members_never_make_an_agreement():
    rule = EarlyStop("consensus", confidence=0.5)
    silent = {"population": 4, "no_answer": 4, "distinct_answers": 0, "majority_share": 0.0}
    failed = {"population": 0, "no_answer": 0, "distinct_answers": 0, "majority_share": 0.0}
    partly = {"population": 4, "no_answer": 1, "distinct_answers": 1, "majority_share": 0.75}
    assert not rule.agrees(silent) and not rule.agrees(failed)
    assert not EarlyStop("unanimous").agrees(partly)  # an unanswered member breaks unanimity


def test_majority_posterior_matches_the_beta_integral():
    # P(p > 1/2) for p ~ Beta(v1 + 1, v2 + 1), by numerical integration
    def integral(v1, v2, steps=20000):
        xs = [(i + 0.5) / steps for i in range(steps)]
        dens = [x ** v1 * (1 - x) ** v2 for x in xs]
        return sum(d for x, d in zip(xs, dens) if x > 0.5) / sum(dens)

    for v1, v2 in [(3, 1), (8, 8), (12, 4), (5, 0), (2, 2)]:
        assert abs(majority_posterior(v1, v2) - integral(v1, v2)) < 1e-3
    assert majority_posterior(8, 8) == pytest.approx(0.5)


def test_early_stop_never_keeps_the_full_schedule_and_its_lineage(tmp_path):
    base = ScriptedEngine()
    asyncio.run(RSALoop(base, RSAConfig(population=4, aggregation_size=2, steps=3),
                        trace=tmp_path / "a.jsonl", progress=False).run(agree_problems()))
    explicit = ScriptedEngine()
    asyncio.run(RSALoop(explicit, RSAConfig(population=4, aggregation_size=2, steps=3,
                                            early_stop="never"),
                        trace=tmp_path / "b.jsonl", progress=False).run(agree_problems()))
    lineage = lambda p: [(e["problem"], e["step"], e["slot"], tuple(e["parents"]), e["seed"])  # noqa: E731
                         for e in load(p) if e["event"] == "generation"]
    assert sorted(lineage(tmp_path / "a.jsonl")) == sorted(lineage(tmp_path / "b.jsonl"))
    assert len(lineage(tmp_path / "a.jsonl")) == len(AGREE) * 4 * 3


def test_resume_restores_a_stopped_problem_as_stopped(server, tmp_path):
    trace = tmp_path / "t.jsonl"
    first = run_stub(server, agree_problems(), early_stop="unanimous", trace=trace)
    before = len(server.stats())
    again = run_stub(server, agree_problems(), early_stop="unanimous", trace=trace)
    assert len(server.stats()) == before, "a resumed run of a finished trace makes no call"
    assert [r.stopped for r in again] == [r.stopped for r in first]
    assert [r.answer for r in again] == [r.answer for r in first]


# ------------------------------------------------------------------ budgets


def test_half_the_budget_goes_to_the_problems_that_agree_least(server):
    spec = {"u1": 1, "u2": 1, "s1": 0, "s2": 0}  # two unanimous from step 1, two split
    need = len(spec) * N * T
    before = len(server.stats())
    results = run_stub(server, agree_problems(spec), budget_generations=need // 2)
    made = server.stats()[before:]
    assert len(made) <= need // 2
    steps = defaultdict(set)
    for name, step in made:
        steps[name].add(step)
    assert steps["u1"] == steps["u2"] == {1}, "unanimous problems get no further step"
    assert max(steps["s1"]) > 1 and max(steps["s2"]) > 1, "split ones do"
    assert all(r.answer is not None for r in results), "every problem ends with an answer"
    for r in results:
        if r.problem.id.startswith("u"):
            assert r.stopped is not None and r.stopped.reason == "budget"


@pytest.mark.parametrize("lockstep", [False, True])
@pytest.mark.parametrize("limit", [{"budget_generations": 37}, {"budget_tokens": 9000}])
def test_a_run_never_exceeds_its_budget(lockstep, limit):
    engine = ScriptedEngine()
    cfg = RSAConfig(population=4, aggregation_size=2, steps=6, lockstep=lockstep,
                    max_tokens=100, **limit)
    results = asyncio.run(RSALoop(engine, cfg, progress=False).run(agree_problems()))
    used_calls = sum(r.usage.calls for r in results)
    used_tokens = sum(r.usage.total_tokens for r in results)
    assert used_calls == engine.calls
    if "budget_generations" in limit:
        assert used_calls <= limit["budget_generations"]
    else:
        assert used_tokens <= limit["budget_tokens"]
    assert all(r.answer is not None for r in results)
    assert any(r.stopped is not None and r.stopped.reason == "budget" for r in results)


def test_a_budget_that_cannot_pay_the_first_steps_is_refused_before_any_call():
    engine = ScriptedEngine()
    with pytest.raises(ConfigError, match="first step of every problem"):
        asyncio.run(RSALoop(engine, RSAConfig(population=4, aggregation_size=2, steps=3,
                                               budget_generations=10),
                            progress=False).run(agree_problems()))
    assert engine.calls == 0


def test_budget_usd_needs_a_priced_model_and_the_forecast_is_printed(capsys):
    with pytest.raises(ConfigError, match="budget_usd"):
        asyncio.run(RSALoop(ScriptedEngine(), RSAConfig(population=2, aggregation_size=2,
                                                        steps=2, budget_usd=1.0),
                            progress=False).run(agree_problems()))
    asyncio.run(RSALoop(ScriptedEngine(), RSAConfig(population=2, aggregation_size=2, steps=2,
                                                    budget_generations=100),
                        progress=False).run(agree_problems()))
    line = capsys.readouterr().err
    assert "4 problem(s) x N=2 x T=2: at most 16 calls" in line and "budget: 100 calls" in line


@pytest.mark.parametrize("kwargs, word", [
    (dict(early_stop="sometimes"), "early_stop"),
    (dict(early_stop_patience=0), "early_stop_patience"),
    (dict(early_stop_confidence=1.5), "early_stop_confidence"),
    (dict(budget_generations=0), "budget_generations"),
    (dict(budget_tokens=-5), "budget_tokens"),
    (dict(budget_usd="lots"), "budget_usd"),
    (dict(islands=3, population=12, aggregation_size=2), "power of 2"),
    (dict(islands=4, population=8, aggregation_size=4), "island size"),
    (dict(islands=4, population=16, steps=2), "steps >= 3"),
])
def test_bad_spending_options_name_the_parameter(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        RSAConfig(**kwargs)


# ------------------------------------------------------------------ islands


def test_islands_draw_from_their_own_island_and_merge_pairwise():
    cfg = RSAConfig(population=8, aggregation_size=2, steps=6, islands=4)
    assert [island_count(cfg, t) for t in range(1, 7)] == [4, 4, 2, 2, 1, 1]
    pop = [Candidate(step=1, slot=s, parents=[], seed=s, completion=Completion(text="x"))
           for s in range(8)]
    for t in range(2, 7):
        size = 8 // island_count(cfg, t)
        for slot, subset in enumerate(draw(cfg, "p", t, pop)):
            assert len(set(subset)) == 2
            assert {i // size for i in subset} == {slot // size}, (t, slot, subset)
    one = RSAConfig(population=8, aggregation_size=2, steps=6)
    many = [s for t in range(2, 7) for s in draw(one, "p", t, pop)]
    assert any(len({i // 2 for i in s}) > 1 for s in many), "without islands draws mix"


def test_islands_fall_back_to_survivors_when_an_island_failed():
    cfg = RSAConfig(population=4, aggregation_size=2, steps=3, islands=2)
    pop = [Candidate(step=1, slot=s, parents=[], seed=s,
                     completion=Completion(text="x") if s >= 2 else Completion(error="down"))
           for s in range(4)]
    subsets = draw(cfg, "p", 2, pop)
    assert all(set(s) <= {2, 3} and len(s) == 2 for s in subsets)


def test_a_run_with_islands_keeps_n_times_t_and_records_its_draws(tmp_path):
    engine = ScriptedEngine()
    trace = tmp_path / "t.jsonl"
    cfg = RSAConfig(population=8, aggregation_size=2, steps=4, islands=2)
    asyncio.run(RSALoop(engine, cfg, trace=trace, progress=False).run(agree_problems()))
    gens = [e for e in load(trace) if e["event"] == "generation"]
    assert len(gens) == len(AGREE) * 8 * 4
    for g in gens:
        if g["step"] == 2:  # two islands of 4 at step 2
            assert {p // 4 for p in g["parents"]} == {g["slot"] // 4}


# ------------------------------------------------------------------ what-if


@pytest.mark.parametrize("rule", ["early_stop=unanimous", "early_stop=consensus",
                                  "early_stop=unanimous,early_stop_patience=2"])
def test_what_if_predicts_a_real_rerun(server, tmp_path, rule):
    trace = tmp_path / "full.jsonl"
    run_stub(server, agree_problems(), trace=trace)
    [what] = replay(trace, parse_rule(rule)).rules
    options = dict(p.split("=") for p in rule.split(","))
    before = len(server.stats())
    rerun = run_stub(server, agree_problems(), **options)
    made = len(server.stats()) - before
    assert what.generations == made
    assert what.saved_generations == len(AGREE) * N * T - made
    full = replay(trace, []).full
    assert what.tokens == sum(r.usage.total_tokens for r in rerun)
    assert what.saved_tokens == full.tokens - what.tokens
    stops = Counter(r.stopped.step for r in rerun if r.stopped is not None)
    assert what.stopped_at == dict(stops)
    assert what.accuracy == sum(bool(r.correct) for r in rerun) / len(rerun)


def test_what_if_refuses_an_unfinished_trace_and_bad_rules(tmp_path):
    with pytest.raises(ConfigError, match="early_stop must be one of"):
        parse_rule("early_stop=sometimes")
    with pytest.raises(ConfigError, match="did you mean 'early_stop'"):
        parse_rule("early_stp=unanimous")
    trace = tmp_path / "t.jsonl"
    asyncio.run(RSALoop(ScriptedEngine(), RSAConfig(population=2, aggregation_size=2, steps=3),
                        trace=trace, progress=False).run(agree_problems()))
    lines = trace.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[: len(lines) // 2]))
    with pytest.raises(ValueError, match="finished full-length trace"):
        replay(cut, parse_rule("early_stop=unanimous"))


def test_rsa_report_what_if_prints_the_table_and_plot(server, tmp_path, capsys):
    from rsa_plugins.cli import main

    trace = tmp_path / "full.jsonl"
    run_stub(server, agree_problems(), trace=trace)
    assert main(["report", str(trace), "--what-if", "early_stop=unanimous",
                 "--what-if", "sweep", "--png", str(tmp_path / "w.png")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith(f"what-if on {trace} (N={N}, T={T}, 4 problems)")
    unanimous = next(ln for ln in lines if ln.startswith("unanimous "))
    saved = sum(N * (T - k) for k in AGREE.values() if k)
    assert f"{saved} (" in unanimous and "1:1 2:1 3:1" in unanimous
    assert sum(ln.startswith("consensus, confidence") for ln in lines) == 4  # the sweep
    assert (tmp_path / "w.png").stat().st_size > 1000
    assert main(["report", str(trace), "--what-if", "early_stop=maybe"]) == 2
    assert "early_stop must be one of" in capsys.readouterr().err
