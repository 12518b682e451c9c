"""`rsa bench` without an engine: GPU choice, the busy clock, saved batches, mode checks."""

from __future__ import annotations

import json

import pytest

from rsa_plugins import bench
from rsa_plugins.busy import BusyClock


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("env", "gpu"), [
    (None, 0), ("1", 1), ("3,0", 3), (" 2 , 1", 2), ("", None), ("-1", None),
    ("GPU-8932f937-d72c-4106-c12f-20bd9faed9f6,1", "GPU-8932f937-d72c-4106-c12f-20bd9faed9f6"),
    ("GPU-8932f937", "GPU-8932f937"), ("MIG-1b2c", "MIG-1b2c")])
def test_first_visible_gpu(env, gpu):
    assert bench.visible_gpu(env) == gpu


def test_memory_reads_nothing_when_every_gpu_is_hidden(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with bench.MemoryPeak() as mem:
        pass
    assert mem.gib is None


def test_busy_clock_counts_time_with_a_request_inside():
    t = FakeClock()
    clock = BusyClock(t)
    assert clock.snapshot()["busy_fraction"] is None
    clock.enter(2)         # 100: two in
    t.now = 101
    clock.leave()          # 101: one left
    t.now = 103
    clock.leave()          # 103: none inside
    t.now = 107
    clock.enter()          # 107: idle for 4 s before this one
    t.now = 109
    clock.leave()
    snap = clock.snapshot()
    assert snap["busy_s"] == 5 and snap["span_s"] == 9
    assert snap["busy_fraction"] == pytest.approx(5 / 9, abs=1e-4)
    assert snap["in_flight_mean"] == pytest.approx((2 * 1 + 1 * 2 + 1 * 2) / 9, abs=0.01)
    assert snap["in_flight_max"] == 2 and snap["requests"] == 3


def test_busy_clock_open_stretch_counts_up_to_now_and_reset_forgets():
    t = FakeClock()
    clock = BusyClock(t)
    clock.enter()
    t.now = 104
    assert clock.snapshot()["busy_s"] == 4 and clock.snapshot()["busy_fraction"] == 1.0
    with pytest.raises(ValueError):
        clock.leave(2)
    clock.reset()
    assert clock.snapshot()["requests"] == 0 and clock.inside == 0


def _args(**over):
    args = bench.build_parser().parse_args(["--model", "m"])
    for k, v in over.items():
        setattr(args, k, v)
    return args


def test_saved_batches_round_trip_and_refuse_another_workload(tmp_path):
    work = bench.workload(_args())
    batches = [[([1, 2, 3], 40), ([1, 2], 7)], [([5], 16)]]
    for name in ("b.json", "b.json.gz"):
        path = tmp_path / name
        bench.save_batches(path, batches, work)
        assert bench.load_batches(path, work) == batches
    with pytest.raises(SystemExit, match="another workload: steps=4"):
        bench.load_batches(tmp_path / "b.json.gz", bench.workload(_args(steps=3)))
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a file written by --save-batches"):
        bench.load_batches(tmp_path / "other.json", work)


@pytest.mark.parametrize(("modes", "engine", "replay", "error"), [
    (["raw"], "offline", False, "list lockstep before it"),
    (["raw", "lockstep"], "offline", False, "list lockstep before it"),
    (["bound"], "async", False, "list barrier-free before it"),
    (["bound"], "offline", True, "must be among lockstep, raw"),
    (["lockstep"], "async", False, "must be among barrier-free"),
])
def test_mode_checks(modes, engine, replay, error):
    with pytest.raises(SystemExit, match=error):
        bench.check_modes(modes, engine, replay)


@pytest.mark.parametrize(("modes", "engine", "replay"), [
    (["lockstep", "raw"], "offline", False), (["raw"], "offline", True),
    (["barrier-free", "bound"], "async", False), (["bound"], "async", True)])
def test_mode_checks_pass(modes, engine, replay):
    bench.check_modes(modes, engine, replay)


def test_replay_of_a_missing_file_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no such file"):
        bench.main(["--model", "m", "--modes", "raw", "--replay", str(tmp_path / "nope.json")])


def test_ratios_against_the_bound():
    data = {"lockstep": {"wall_s": 3.0}, "raw": {"wall_s": 2.4}, "barrier-free": {"wall_s": 2.0},
            "bound": {"wall_s": 1.5}}
    r = bench.ratios(data)
    assert r["lockstep_over_bound_wall"] == 2.0 and r["barrier-free_over_bound_wall"] == 1.3333
    assert r["raw_over_bound_wall"] == 1.6 and r["lockstep_over_barrier-free_wall"] == 1.5


def test_repeats_give_medians_with_the_spread_of_the_wall_time():
    runs = [{"wall_s": w, "generated_tokens": 100, "prefix_hit_rate": h, "gpu_memory_gib": None,
             "ranks": [{"rank": 0}]} for w, h in ((3.0, 0.2), (1.0, 0.4), (2.0, 0.3))]
    f = bench.summarize(runs, "async", {"max_num_seqs": 1024})
    assert f["wall_s"] == 2.0 and (f["wall_s_min"], f["wall_s_max"]) == (1.0, 3.0)
    assert f["prefix_hit_rate"] == 0.3 and f["generated_tokens"] == 100
    assert f["repeats"] == 3 and [r["wall_s"] for r in f["runs"]] == [3.0, 1.0, 2.0]
    assert f["engine"] == "async" and f["engine_settings"] == {"max_num_seqs": 1024}
    assert "ranks" not in f["runs"][0] and f["gpu_memory_gib"] is None


def test_modes_with_different_engine_settings_are_flagged(tmp_path, capsys):
    from rsa_plugins.bench.run import _merge

    out = tmp_path / "r.json"
    offline = {"max_num_batched_tokens": 16384, "max_num_seqs": 1024, "num_gpu_blocks": 10}
    _merge(out, {"lockstep": {"wall_s": 2.0, "engine_settings": offline}})
    _merge(out, {"barrier-free": {"wall_s": 1.0, "engine_settings": {**offline, "num_gpu_blocks": 11}}})
    assert "engine_settings_differ" not in json.loads(out.read_text())  # KV blocks: not compared
    assert capsys.readouterr().err == ""
    data = _merge(out, {"barrier-free": {"wall_s": 1.0, "engine_settings": {
        **offline, "max_num_batched_tokens": 2048}}})
    assert data["engine_settings_differ"] == {
        "max_num_batched_tokens": {"lockstep": 16384, "barrier-free": 2048}}
    assert data["ratios"]["lockstep_over_barrier-free_wall"] == 2.0
    err = capsys.readouterr().err
    assert "warning" in err and "max_num_batched_tokens lockstep 16384, barrier-free 2048" in err


def test_next_starts_a_piece_with_the_arguments_of_the_first_but_its_files(tmp_path):
    from rsa_plugins.bench.command import parse_pieces

    first, second = parse_pieces(["--model", "m", "--engine", "async", "--enforce-eager",
                                  "--max-num-seqs", "64", "--median", "9", "--repeat", "3",
                                  "--problems", "2", "--max-tokens", "32", "--out", "a",
                                  "--next", "--median", "7", "--out", "b"])
    assert (first.median, first.repeat, first.out.name) == (9, 3, "a")
    assert (second.model, second.engine, second.enforce_eager, second.max_num_seqs) == (
        "m", "async", True, 64)
    assert (second.problems, second.max_tokens, second.repeat) == (2, 32, 3)  # inherited
    assert (second.median, second.out.name) == (7, "b")  # its own
    [third] = parse_pieces(["--model", "m", "--out", "a", "--next"])[1:]
    assert third.out is None  # files are never inherited


@pytest.mark.parametrize(("argv", "error"), [
    (["--model", "m", "--out", "a.json", "--next", "--median", "9", "--out", "a.json"],
     "writes a.json again"),
    (["--model", "m", "--out", "a.json", "--next", "--out", "b.json", "--dtype", "float32"],
     r"changes engine arguments \(--dtype\)"),
    (["--model", "m", "--repeat", "0"], "--repeat must be >= 1"),
    (["--model", "m", "--max-num-seqs", "0"], "--max-num-seqs must be >= 1"),
])
def test_bad_invocations_are_refused_before_any_engine_starts(argv, error):
    with pytest.raises(SystemExit, match=error):
        bench.main(argv)
