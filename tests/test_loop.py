"""Fidelity of the RSA loop to the paper's semantics, on a scripted model."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections import Counter, defaultdict

import pytest

from fakes import ScriptedEngine, candidates_in, is_aggregation
from rsa_plugins import RSALoop, ConfigError, Problem, RSAConfig
from rsa_plugins.seeds import derive_seed, draw_subsets
from rsa_plugins.trace import load

PROBLEMS = [Problem(f"Compute item {i}. Put the answer in \\boxed{{}}.", id=f"p{i}", target="42")
            for i in range(3)]


def pid(request):
    """The id of the problem a request is about (the loop keys a problem's requests by it)."""
    return request.cache_key


def slot_of(problem_id, step, seed, population=8):
    """The slot a request of `step` fills, told by its seed (a hash of problem, step, slot)."""
    return {derive_seed(0, problem_id, step, s): s for s in range(population)}[seed]


def run(engine, problems=PROBLEMS, **cfg):
    trace = cfg.pop("trace", None)
    return asyncio.run(RSALoop(engine, RSAConfig(**cfg), trace=trace, progress=False).run(problems))


def requests_by_problem(engine):
    out = defaultdict(list)
    for r in engine.requests:
        out[pid(r)].append(r)
    return out


@pytest.mark.parametrize("lockstep", [False, True])
@pytest.mark.parametrize("supports_n", [False, True])
def test_exactly_n_times_t_generations_per_problem(lockstep, supports_n):
    eng = ScriptedEngine(supports_n=supports_n)
    results = run(eng, population=5, aggregation_size=3, steps=4, lockstep=lockstep)
    per = requests_by_problem(eng)
    for p, res in zip(PROBLEMS, results):
        assert sum(r.n for r in per[p.id]) == 5 * 4
        assert [m["population"] for m in res.steps] == [5, 5, 5, 5]
        assert res.usage.calls == 20
    if supports_n:  # the first step is one request with n=N per problem
        firsts = [r for r in eng.requests if eng.step_of(r) == 1]
        assert len(firsts) == len(PROBLEMS) and all(r.n == 5 for r in firsts)


def test_aggregation_prompts_hold_k_distinct_members_of_previous_population():
    eng = ScriptedEngine()
    results = run(eng, population=6, aggregation_size=3, steps=3, trace=None)
    assert results
    # rebuild every problem's populations from what the engine was shown
    for pid, reqs in requests_by_problem(eng).items():
        for r in reqs:
            text = r.messages[-1]["content"]
            parents = eng.parents_of(r)
            if eng.step_of(r) == 1:
                assert not is_aggregation(text) and parents == []
                continue
            t = eng.step_of(r)
            assert len(parents) == 3
            slots = {slot_of(pid, p.step, p.request.seed) for p in parents}
            assert len(slots) == 3, "members of a subset must be distinct"
            assert r.seed in {derive_seed(0, pid, t, slot) for slot in range(6)}
            assert all(p.step == t - 1 for p in parents), "parents come from the previous step"
            assert all(p.request.cache_key == pid for p in parents), "and from the same problem"
            assert candidates_in(text) == [p.replies[0] for p in parents]
            problem = next(p for p in PROBLEMS if p.id == pid)
            assert problem.prompt in text


def test_each_parent_is_a_member_of_that_problems_previous_population(tmp_path):
    trace = tmp_path / "t.jsonl"
    run(ScriptedEngine(), population=4, aggregation_size=2, steps=3, trace=trace)
    gens = [e for e in load(trace) if e["event"] == "generation"]
    pop = defaultdict(dict)
    for g in gens:
        pop[(g["problem"], g["step"])][g["slot"]] = g
    for g in gens:
        assert len(pop[(g["problem"], g["step"])]) == 4
        if g["step"] > 1:
            prev = pop[(g["problem"], g["step"] - 1)]
            assert set(g["parents"]) <= set(prev) and len(set(g["parents"])) == 2


def test_populations_are_replaced_not_merged():
    results = run(ScriptedEngine(), population=4, aggregation_size=2, steps=3)
    for res in results:
        assert len(res.population) == 4
        assert {c.step for c in res.population} == {3}
        assert sorted(c.slot for c in res.population) == [0, 1, 2, 3]


def test_t1_is_plain_parallel_sampling():
    eng = ScriptedEngine()
    results = run(eng, population=8, aggregation_size=4, steps=1)
    assert len(eng.requests) == 8 * len(PROBLEMS)
    assert not any(is_aggregation(r.messages[-1]["content"]) for r in eng.requests)
    assert all(len(r.population) == 8 and len(r.steps) == 1 for r in results)


def test_k1_uses_refine_wording():
    eng = ScriptedEngine()
    run(eng, population=3, aggregation_size=1, steps=2)
    aggs = [r.messages[-1]["content"] for r in eng.requests if eng.step_of(r) == 2]
    assert aggs and all("---- Candidate ----" in t and "Solution 1" not in t for t in aggs)
    assert all("Refine" in t or "refine" in t for t in aggs)
    eng2 = ScriptedEngine()
    run(eng2, population=3, aggregation_size=2, steps=2)
    assert all("---- Solution 2 ----" in r.messages[-1]["content"]
               for r in eng2.requests if eng2.step_of(r) == 2)


def test_subset_draws_are_uniform():
    n, k, draws = 6, 3, 12000
    subsets = draw_subsets(seed=7, problem_id="x", step=2, population=n, size=k, count=draws)
    assert all(len(set(s)) == k for s in subsets)
    counts = Counter(frozenset(s) for s in subsets)
    cells = list(itertools.combinations(range(n), k))
    assert len(counts) == len(cells) == 20
    expected = draws / len(cells)
    chi2 = sum((counts[frozenset(c)] - expected) ** 2 / expected for c in cells)
    # chi-square, 19 degrees of freedom: P(X > 43.82) = 0.001
    assert chi2 < 43.82, chi2
    members = Counter(i for s in subsets for i in s)
    exp_m = draws * k / n
    chi2_m = sum((members[i] - exp_m) ** 2 / exp_m for i in range(n))
    assert chi2_m < 20.52, chi2_m  # 5 degrees of freedom, p = 0.001
    # subsets of one step are independent draws, not a partition: among 200 draws of 3 of 6
    # (20 possible subsets) some repeat, and together they cover members more than once
    assert len({frozenset(s) for s in subsets[:200]}) <= 20
    assert len({tuple(sorted(s)) for s in subsets[:200]}) < 200


def test_same_seed_same_subsets_and_seeds_whatever_the_completion_order(tmp_path):
    def lineage(delay, path):
        eng = ScriptedEngine(delay=delay)
        run(eng, population=5, aggregation_size=3, steps=3, seed=11, trace=path)
        recs = {(g["problem"], g["step"], g["slot"]): (tuple(g["parents"]), g["seed"], g["text"])
                for g in load(path) if g["event"] == "generation"}
        return recs, [g for g in load(path) if g["event"] == "generation"]

    a, order_a = lineage(0.0, tmp_path / "a.jsonl")
    b, order_b = lineage(0.02, tmp_path / "b.jsonl")
    assert a == b
    keys = lambda gens: [(g["problem"], g["step"], g["slot"]) for g in gens]  # noqa: E731
    assert keys(order_a) != keys(order_b), "the delays should have changed completion order"
    seeds = [v[1] for v in a.values()]
    assert len(set(seeds)) == len(seeds), "every request gets its own sampling seed"
    c, _ = lineage(0.0, tmp_path / "c.jsonl")
    assert c == a
    other = ScriptedEngine()
    run(other, population=5, aggregation_size=3, steps=3, seed=12)
    assert {r.seed for r in other.requests} != {v[1] for v in a.values()}


def test_lockstep_sends_one_batch_per_step():
    eng = ScriptedEngine()
    run(eng, population=4, aggregation_size=2, steps=3, lockstep=True)
    assert eng.batches == [4 * len(PROBLEMS)] * 3


def test_barrier_free_lets_a_fast_problem_run_ahead():
    class Uneven(ScriptedEngine):
        order: list

        async def _one(self, req):
            name = req.cache_key
            if name == "slow":
                await asyncio.sleep(0.3)
            self.order.append((name, self.step_of(req)))
            return await super()._one(req)

    eng = Uneven()
    eng.order = []
    problems = [Problem("slow one \\boxed{}", id="slow"), Problem("fast one \\boxed{}", id="fast")]
    asyncio.run(RSALoop(eng, RSAConfig(population=2, aggregation_size=2, steps=3),
                    progress=False).run(problems))
    first_slow = eng.order.index(("slow", 1))
    assert ("fast", 3) in eng.order[:first_slow], "fast problem must finish all steps meanwhile"
    eng2 = Uneven()
    eng2.order = []
    asyncio.run(RSALoop(eng2, RSAConfig(population=2, aggregation_size=2, steps=3, lockstep=True),
                    progress=False).run(problems))
    assert eng2.order.index(("fast", 2)) > eng2.order.index(("slow", 1))


def test_failed_generations_are_counted_and_survivors_aggregated():
    eng = ScriptedEngine(fail_every=4)
    results = run(eng, population=6, aggregation_size=3, steps=3)
    total_failed = sum(m["failed"] for r in results for m in r.steps)
    assert total_failed == eng.calls // 4
    for r in results:
        assert not r.failed and r.answer is not None
        for m in r.steps:
            assert m["population"] + m["failed"] == 6
    alive = {(p.id, t + 1): m["population"] for p, r in zip(PROBLEMS, results)
             for t, m in enumerate(r.steps)}
    for req in eng.requests:
        t = eng.step_of(req)
        if t > 1:  # every candidate shown is a member that succeeded: K of them, or all there are
            shown = eng.parents_of(req)
            assert len(shown) == min(3, alive[(pid(req), t - 1)])
            assert all(p.step == t - 1 for p in shown)


def test_problem_whose_whole_population_failed_is_reported_failed():
    eng = ScriptedEngine(fail_every=1)
    (res,) = run(eng, problems=[Problem("x \\boxed{}", target="1")], population=3,
                 aggregation_size=2, steps=3)
    assert res.failed and res.answer is None and res.correct is None
    assert res.steps[0]["failed"] == 3 and len(res.steps) == 1


def test_majority_and_random_selection():
    eng = ScriptedEngine(answers=("5", "5", "5", "9"))
    (maj,) = run(eng, problems=[Problem("q \\boxed{}", target="5")], population=8,
                 aggregation_size=2, steps=1)
    counts = Counter(c.answer for c in maj.population)
    assert maj.answer == counts.most_common(1)[0][0]
    assert maj.votes == dict(counts)
    r1 = run(ScriptedEngine(), population=8, aggregation_size=2, steps=1, selection="random", seed=3)
    r2 = run(ScriptedEngine(), population=8, aggregation_size=2, steps=1, selection="random", seed=3)
    assert [r.chosen for r in r1] == [r.chosen for r in r2]
    picks = {r.chosen for s in range(12)
             for r in run(ScriptedEngine(), population=8, aggregation_size=2, steps=1,
                          selection="random", seed=s)}
    assert len(picks) > 2, "random selection should pick different members across seeds"


def test_metrics_match_a_hand_computation():
    (res,) = run(ScriptedEngine(), problems=[Problem("m \\boxed{}", target="42")],
                 population=8, aggregation_size=3, steps=2)
    for m in res.steps:
        assert set(m) >= {"mean_accuracy", "pass_at_n", "majority_accuracy", "distinct_answers",
                          "answer_entropy", "majority_share", "prompt_tokens", "completion_tokens",
                          "truncated", "failed"}
    final = res.population
    answers = [c.answer for c in final]
    assert res.steps[-1]["mean_accuracy"] == sum(a == "42" for a in answers) / 8
    assert res.steps[-1]["pass_at_n"] == float("42" in answers)
    top = Counter(answers).most_common()
    assert res.steps[-1]["majority_share"] == top[0][1] / 8
    assert res.steps[-1]["distinct_answers"] == len(top)
    ent = -sum(c / 8 * math.log(c / 8) for _, c in top)
    assert abs(res.steps[-1]["answer_entropy"] - ent) < 1e-6
    assert res.steps[-1]["completion_tokens"] == sum(c.completion.completion_tokens for c in final)


def test_no_accuracy_keys_without_target():
    (res,) = run(ScriptedEngine(), problems=[Problem("m \\boxed{}")], population=3,
                 aggregation_size=2, steps=2)
    assert "mean_accuracy" not in res.steps[0] and res.correct is None


@pytest.mark.parametrize("kwargs, word", [
    (dict(population=2, aggregation_size=3), "aggregation_size"),
    (dict(population=0), "population"),
    (dict(steps=0), "steps"),
    (dict(aggregation_size=0), "aggregation_size"),
    (dict(selection="best"), "selection"),
    (dict(view="summary"), "view"),
    (dict(kind="poetry"), "kind"),
    (dict(temperature=-0.1), "temperature"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(population="many"), "population"),
    (dict(template="no placeholders"), "template"),
])
def test_bad_config_names_the_parameter(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        RSAConfig(**kwargs)


def test_config_coerces_integral_values():
    cfg = RSAConfig(population="8", aggregation_size=2.0, steps=3)
    assert (cfg.population, cfg.aggregation_size) == (8, 2)


def test_resume_after_a_kill_repeats_nothing_and_matches(tmp_path):
    full = tmp_path / "full.jsonl"
    base = run(ScriptedEngine(), population=4, aggregation_size=2, steps=4, seed=5, trace=full)
    lines = full.read_text().splitlines(keepends=True)
    # keep everything up to the second step of p1, then half of one more line (a torn write)
    cut = max(i for i, ln in enumerate(lines)
              if json.loads(ln).get("event") == "step" and json.loads(ln)["problem"] == "p1"
              and json.loads(ln)["step"] == 2)
    part = tmp_path / "part.jsonl"
    part.write_text("".join(lines[: cut + 1]) + lines[cut + 1][:25])
    eng = ScriptedEngine()
    resumed = run(eng, population=4, aggregation_size=2, steps=4, seed=5, trace=part)
    assert [r.answer for r in resumed] == [r.answer for r in base]
    assert [[c.text for c in r.population] for r in resumed] == \
        [[c.text for c in r.population] for r in base]
    assert not any(pid(r) == "p1" and eng.step_of(r) <= 2 for r in eng.requests), \
        "finished steps must not run again"
    events = load(part)
    gens = Counter((e["problem"], e["step"], e["slot"]) for e in events if e["event"] == "generation")
    assert set(gens.values()) == {1}, "no generation is written twice"
    steps = Counter((e["problem"], e["step"]) for e in events if e["event"] == "step")
    assert set(steps.values()) == {1} and len(steps) == 3 * 4


def test_resume_refuses_a_trace_of_another_config(tmp_path):
    path = tmp_path / "t.jsonl"
    run(ScriptedEngine(), population=3, aggregation_size=2, steps=2, trace=path)
    with pytest.raises(ValueError, match="different RSA configuration"):
        run(ScriptedEngine(), population=4, aggregation_size=2, steps=2, trace=path)


def test_prompts_are_fitted_to_the_context():
    class Small(ScriptedEngine):
        max_model_len = 600

    long_answers = ("x " * 900 + "\\boxed{42}",)
    eng = Small(answers=long_answers)
    (res,) = run(eng, problems=[Problem("long \\boxed{}")], population=3, aggregation_size=3,
                 steps=2, max_tokens=200)
    aggs = [r for r in eng.requests if eng.step_of(r) == 2]
    assert aggs and res.steps[1]["fitted_prompts"] == 3
    for r in aggs:
        used = eng.count_tokens(r.messages[-1]["content"]) + 32
        assert used + r.max_tokens <= 600
        assert "earlier part omitted" in r.messages[-1]["content"]


def test_prompt_that_cannot_fit_fails_clearly_without_a_request():
    class Tiny(ScriptedEngine):
        max_model_len = 40

    eng = Tiny()
    (res,) = run(eng, problems=[Problem("word " * 200)], population=2, aggregation_size=1, steps=2)
    assert eng.requests == [] and res.failed
    assert res.steps[0]["failed"] == 2


def test_request_seed_is_a_pure_function():
    assert derive_seed(1, "p", 2, 3) == derive_seed(1, "p", 2, 3)
    assert derive_seed(1, "p", 2, 3) != derive_seed(1, "p", 2, 4)


def test_candidate_order_index_sorts_each_subset_and_keeps_the_draws():
    drawn, index = ScriptedEngine(), ScriptedEngine()
    run(drawn, population=6, aggregation_size=3, steps=3)
    run(index, population=6, aggregation_size=3, steps=3, candidate_order="index")
    def key(eng):
        return lambda r: (pid(r), eng.step_of(r), r.seed)

    pairs = list(zip(sorted(drawn.requests, key=key(drawn)),
                     sorted(index.requests, key=key(index))))
    agg = [(a, b) for a, b in pairs if drawn.step_of(a) > 1]
    assert agg and all(key(drawn)(a) == key(index)(b) for a, b in agg)

    def slots(eng, r):
        return [slot_of(pid(r), p.step, p.request.seed, 6) for p in eng.parents_of(r)]

    # same subsets, sorted by slot
    assert all(sorted(slots(drawn, a)) == slots(index, b) for a, b in agg)
    assert any(slots(drawn, a) != slots(index, b) for a, b in agg)  # drawn order: unsorted


def test_candidate_order_is_validated_and_keeps_old_fingerprints():
    from rsa_plugins.config import ConfigError, RSAConfig

    with pytest.raises(ConfigError, match="candidate_order must be one of drawn, index"):
        RSAConfig(candidate_order="sorted")
    base = RSAConfig()
    assert base.replace(candidate_order="drawn").fingerprint() == base.fingerprint()
    assert base.replace(candidate_order="index").fingerprint() != base.fingerprint()


# ------------------------------------------------------------------ chat shape and answer format


def test_the_problems_whole_chat_reaches_every_request_and_the_prefill_is_read_back():
    fewshot = [{"role": "user", "content": "Example: 1 + 1?"},
               {"role": "assistant", "content": "So the answer is \\boxed{2}"}]
    problem = Problem("Compute item 7.", id="c", system="Be brief.", fewshot=fewshot,
                      prefill="Let me think (0). So the answer is", target="42")
    eng = ScriptedEngine()
    (res,) = run(eng, problems=[problem], population=3, aggregation_size=2, steps=2)
    assert len(eng.requests) == 6
    for r in eng.requests:
        assert r.messages[0] == {"role": "system", "content": "Be brief."}
        assert r.messages[1:3] == fewshot
        assert r.messages[-1] == {"role": "assistant", "content": problem.prefill}
        assert r.prefill == problem.prefill and r.chat
    for r in eng.requests:
        if eng.step_of(r) > 1:  # candidates are shown with the prefill in front
            shown = candidates_in(r.messages[-2]["content"])
            assert len(shown) == 2
            assert shown == [(problem.prefill + c.replies[0]).strip()
                             for c in eng.parents_of(r)]
    assert res.correct is not None and all(c.answer is not None for c in res.population)


def test_aggregation_keeps_the_tasks_format_unless_rsa_chose_one():
    eng = ScriptedEngine()
    own = Problem("Compute item 8. End with 'The answer is N.'", id="own")
    chosen = Problem("Compute item 9.", id="rsa", answer_format="the final answer as \\boxed{N}")
    run(eng, problems=[own, chosen], population=2, aggregation_size=2, steps=2)
    texts = {pid(r): r.messages[-1]["content"] for r in eng.requests if eng.step_of(r) > 1}
    closing = texts["own"].rsplit("\n\n", 1)[1]
    assert "in exactly the form the problem asks for" in closing
    assert "ANSWER:" not in texts["own"] and "\\boxed" not in closing
    assert texts["rsa"].endswith("ending with the final answer as \\boxed{N}.")


def test_a_step_whose_every_generation_failed_keeps_the_previous_population(tmp_path):
    from rsa_plugins.types import Completion

    class AggregationDown(ScriptedEngine):
        async def _one(self, req):
            if self.step_of(req) > 1:
                self.requests.append(req)
                return [Completion(error="InjectedError: aggregation is down")]
            return await super()._one(req)

    trace = tmp_path / "t.jsonl"
    eng = AggregationDown()
    (res,) = run(eng, problems=PROBLEMS[:1], population=4, aggregation_size=2, steps=4,
                 trace=trace)
    assert not res.failed and res.degraded_at == 2 and res.answer is not None
    assert [c.step for c in res.population] == [1, 1, 1, 1]
    assert len(res.steps) == 2 and res.steps[1]["kept_previous"] and res.steps[1]["failed"] == 4
    assert sum(1 for r in eng.requests if eng.step_of(r) > 1) == 4, "no step after the failed one"
    [result] = [e for e in load(trace) if e["event"] == "result"]
    assert result["degraded_at"] == 2 and result["answer"] == res.answer
    again = AggregationDown()
    (res2,) = run(again, problems=PROBLEMS[:1], population=4, aggregation_size=2, steps=4,
                  trace=trace)
    assert again.requests == [] and res2.answer == res.answer and res2.degraded_at == 2
