"""lm-eval integration without a real model: registration (hook, entry points, wheels),
model_args validation, and the rsa-litellm flow end to end through lm-eval with a scripted
LiteLLM provider.  Real-model runs are in test_lm_eval_real.py."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

from rsa_plugins.adapters.lm_eval.options import RSAOptions
from rsa_plugins.adapters.lm_eval.outputs import RSAOutput
from rsa_plugins.adapters.lm_eval.metrics import population_metrics
from rsa_plugins.answers import extract
from rsa_plugins.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tasks" / "lm_eval"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def py(code: str, env: dict[str, str] | None = None, args: tuple[str, ...] = (),
       cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (from `cwd`: ``-c`` puts it on sys.path)."""
    return subprocess.run([sys.executable, *args, "-c", textwrap.dedent(code)], env=env or ENV,
                          capture_output=True, text=True, timeout=300, cwd=cwd)


# ------------------------------------------------------------------ registration


def test_stock_lm_eval_resolves_rsa_models_and_builtins_through_the_startup_hook():
    out = py("""
        import sys
        assert "rsa_plugins" not in sys.modules          # the hook does not import the package
        assert "rsa_plugins._hooks" in sys.modules       # ... but is installed at start-up
        from lm_eval.api.registry import get_model, model_registry
        print(get_model("rsa-litellm").__name__)
        print(model_registry._objs["rsa-vllm"])
        for name in ("hf", "vllm", "dummy"):
            assert name in model_registry, name
        print(get_model("dummy").__name__)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["RSALiteLLM", "rsa_plugins.adapters.lm_eval.vllm:RSAVLLM",
                                  "DummyLM"]


def test_hook_can_be_switched_off():
    out = py("""
        from lm_eval.api.registry import get_model
        try:
            get_model("rsa-litellm")
        except ValueError as exc:
            print("missing:", exc)
    """, env={**ENV, "RSA_PLUGINS_NO_HOOK": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("missing:")


def test_explicit_register_keeps_builtin_names():
    out = py("""
        from rsa_plugins.adapters.lm_eval import register
        register(); register()                          # idempotent
        from lm_eval.api.registry import get_model
        print(get_model("dummy").__name__, get_model("rsa-litellm").__name__)
    """, env={**ENV, "RSA_PLUGINS_NO_HOOK": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["DummyLM", "RSALiteLLM"]


def test_entry_points_are_declared_for_plugin_aware_lm_eval():
    from importlib.metadata import entry_points

    eps = {ep.name: ep for ep in entry_points(group="lm_eval.models")}
    assert eps["rsa-litellm"].load().__name__ == "RSALiteLLM"
    assert eps["rsa-vllm"].value == "rsa_plugins.adapters.lm_eval.vllm:RSAVLLM"
    assert (ROOT / "rsa_plugins" / "adapters" / "lm_eval" / "vllm.py").is_file()


@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable-wheel"])
def test_built_wheels_install_the_startup_hook(tmp_path, editable):
    """Build the (editable) wheel, install it into a bare directory and start Python with only
    that directory as a site dir: the stock registry must then know rsa-litellm."""
    dist = tmp_path / "dist"
    build = ("from setuptools import build_meta as b, sys; "
             f"print(b.{'build_editable' if editable else 'build_wheel'}({str(dist)!r}))")
    dist.mkdir()
    done = subprocess.run([sys.executable, "-c", build], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel = next(dist.glob("*.whl"))
    site = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--target", str(site), str(wheel)], capture_output=True, text=True,
                          timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    assert (site / "rsa_plugins_startup.pth").read_text().strip() == "import _rsa_plugins_startup"
    # -S: no site processing, so the shared venv's own hook and editable finder stay out;
    # addsitedir(site) runs only the freshly installed .pth files
    venv_site = sysconfig.get_paths()["purelib"]
    out = py(f"""
        import site, sys
        site.addsitedir({str(site)!r})
        sys.path.append({venv_site!r})
        assert "rsa_plugins._hooks" in sys.modules
        from lm_eval.api.registry import get_model
        cls = get_model("rsa-litellm")
        import rsa_plugins
        print(cls.__name__, rsa_plugins.__file__)
    """, args=("-S",), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    name, where = out.stdout.split()
    assert name == "RSALiteLLM"
    assert Path(where).is_relative_to(ROOT if editable else site)


def test_dummy_model_still_runs_with_the_plugin_installed(tmp_path):
    out = subprocess.run([str(BIN / "lm_eval"), "--model", "dummy", "--tasks", "rsa_rg_arithmetic",
                          "--include_path", str(TASKS), "--limit", "2", "--output_path",
                          str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(next(tmp_path.rglob("results_*.json")).read_text())
    assert results["results"]["rsa_rg_arithmetic"]["exact_match,none"] == 0.0  # "lol" is wrong
    assert "rsa" not in results["config"]


# ------------------------------------------------------------------ model_args


def test_rsa_options_are_split_from_engine_args():
    kwargs = {"model": "x", "population": 4, "rsa_aggregation_size": 2, "steps": 3,
              "temperature": 0.7, "trace": "/tmp/t.jsonl", "gpu_memory_utilization": 0.9}
    opts = RSAOptions.pop_from(kwargs)
    assert kwargs == {"model": "x", "gpu_memory_utilization": 0.9}
    assert (opts.config.population, opts.config.aggregation_size, opts.config.steps) == (4, 2, 3)
    assert opts.explicit == {"population", "aggregation_size", "steps", "temperature"}
    assert opts.trace == "/tmp/t.jsonl"


@pytest.mark.parametrize("args, name", [
    ({"population": 4, "aggregation_size": 9}, "aggregation_size"),
    ({"selection": "best"}, "selection"),
    ({"steps": 0}, "steps"),
    ({"temperature": -1.0}, "temperature"),
    ({"sampling": "top_k=5"}, "sampling"),
])
def test_bad_rsa_options_name_the_parameter(args, name):
    with pytest.raises(ConfigError, match=name):
        RSAOptions.pop_from(dict(args))


# one lm_eval process each (about 20 s): the RSA options' messages are checked above without one
@pytest.mark.parametrize("model, args, name", [
    ("rsa-vllm", "data_parallel_size=0", "data_parallel_size"),
    ("rsa-litellm", "model=hosted_vllm/x,population=4,aggregation_size=9", "aggregation_size"),
])
def test_bad_model_args_fail_on_the_cli_before_a_model_loads(tmp_path, model, args, name):
    missing = tmp_path / "no-such-model"  # loading it would fail with a different error
    if model == "rsa-vllm":
        args = f"pretrained={missing},{args}"
    out = subprocess.run([str(BIN / "lm_eval"), "--model", model, "--model_args", args,
                          "--tasks", "rsa_rg_arithmetic", "--include_path", str(TASKS),
                          "--limit", "1"], env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    last = [ln for ln in out.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("lm_eval: error: ") and name in last, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, "one line, not a traceback"
    assert "no-such-model" not in last
    assert "Initializing a V1 LLM engine" not in out.stderr


# ------------------------------------------------------------------ outputs and metrics


def test_rsa_output_is_a_str_that_survives_pickling():
    out = RSAOutput("\\boxed{7}", population=["\\boxed{7}", "\\boxed{8}"], answers=["7", "8"],
                    chosen=0)
    back = pickle.loads(pickle.dumps(out))
    assert isinstance(back, RSAOutput) and back == "\\boxed{7}"
    assert back.population == ["\\boxed{7}", "\\boxed{8}"] and back.chosen == 0


def test_population_metrics():
    texts = ["so \\boxed{7}", "\\boxed{8}", "\\boxed{8}", ""]
    out = RSAOutput(texts[0], population=texts)
    score = lambda t: float(extract(t, "math") == "7")  # noqa: E731
    m = population_metrics(out, score, "math")
    assert m == {"mean_accuracy": 0.25, "majority_accuracy": 0.0, "pass_at_n": 1.0}
    # a plain string (any other lm-eval model) is a population of one
    assert population_metrics("\\boxed{7}", score, "math") == {
        "mean_accuracy": 1.0, "majority_accuracy": 1.0, "pass_at_n": 1.0}


# ------------------------------------------------------------------ rsa-litellm through lm-eval

TOY_YAML = """
task: toy_rsa
custom_dataset: !function utils.load
output_type: generate_until
test_split: test
doc_to_text: "{{question}} Put the final answer in \\\\boxed{}."
doc_to_target: "{{answer}}"
process_results: !function utils.process_results
generation_kwargs: {until: ["Question:"], do_sample: false, temperature: 0.0, max_gen_toks: 77}
metric_list:
  - {metric: exact_match, aggregation: mean, higher_is_better: true}
  - {metric: mean_accuracy, aggregation: mean, higher_is_better: true}
  - {metric: majority_accuracy, aggregation: mean, higher_is_better: true}
  - {metric: pass_at_n, aggregation: mean, higher_is_better: true}
metadata: {version: 1.0}
"""
TOY_UTILS = """
import datasets
from rsa_plugins.adapters.lm_eval.metrics import population_metrics
from rsa_plugins.answers import extract

def load(**_):
    rows = [{"question": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in ((40, 2), (3, 4), (40, 1))]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})

def process_results(doc, results):
    score = lambda t: float(extract(t, "math") == doc["answer"])
    return {"exact_match": score(results[0]), **population_metrics(results[0], score, "math")}
"""


@pytest.fixture
def toy_tasks(tmp_path):
    folder = tmp_path / "toy_tasks" / "toy_rsa"
    folder.mkdir(parents=True)
    (folder / "toy_rsa.yaml").write_text(TOY_YAML)
    (folder / "utils.py").write_text(TOY_UTILS)
    return folder.parent


def test_rsa_litellm_through_simple_evaluate(toy_tasks, tmp_path, caplog):
    """Scripted provider: first samples answer 42/41/7 at random, aggregations vote."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from fakes import make_fake_llm
    from rsa_plugins.adapters.lm_eval import register
    from rsa_plugins.trace import load

    handler = make_fake_llm()
    register()
    # lm-eval's logger does not propagate to the root logger that caplog listens to
    logging.getLogger("lm_eval.rsa_plugins").addHandler(caplog.handler)
    trace = tmp_path / "trace.jsonl"
    n, k, t = 4, 2, 3
    results = lm_eval.simple_evaluate(
        model="rsa-litellm",
        model_args={"model": "fakellm/scripted", "population": n, "aggregation_size": k,
                    "steps": t, "trace": str(trace), "progress": False},
        tasks=["toy_rsa"], task_manager=TaskManager(include_path=str(toy_tasks)),
        log_samples=True, apply_chat_template=True, system_instruction="Be careful.")
    # every generation went through the provider: N first samples + (T-1)*N aggregations each
    assert len(handler.calls) in (3 * t * n, 3 * (1 + (t - 1) * n))
    assert {c["params"].get("temperature") for c in handler.calls} == {1.0}  # greedy overridden
    assert {c["params"].get("max_tokens") for c in handler.calls} == {77}
    assert {tuple(c["params"].get("stop") or ()) for c in handler.calls} == {("Question:",)}
    assert all(c["messages"][0] == {"role": "system", "content": "Be careful."}
               for c in handler.calls)
    assert any("decode greedily" in r.getMessage() for r in caplog.records)
    aggregations = [c for c in handler.calls if "---- Solution 1 ----" in c["messages"][-1]["content"]]
    assert len(aggregations) == 3 * (t - 1) * n

    # per-sample metrics agree with the final population in the trace (one file per task)
    events = load(tmp_path / "trace.toy_rsa.jsonl")
    samples = results["samples"]["toy_rsa"]
    assert len(samples) == 3
    for s in samples:
        pid = f"toy_rsa/{s['doc_id']}"
        final = [e for e in events if e["event"] == "generation" and e["problem"] == pid
                 and e["step"] == t]
        assert len(final) == n
        gold = s["doc"]["answer"]
        assert s["mean_accuracy"] == sum(e["answer"] == gold for e in final) / n
        assert s["pass_at_n"] == float(any(e["answer"] == gold for e in final))
        chosen = next(e for e in events if e["event"] == "result" and e["problem"] == pid)
        assert s["exact_match"] == float(chosen["answer"] == gold)
    info = results["config"]["rsa"]
    assert info["config"]["population"] == n and info["engine"] == "litellm"
    assert [r["step"] for r in info["steps"]] == list(range(1, t + 1))
    assert info["runs"][0]["config"]["temperature"] == 1.0
    assert info["runs"][0]["config"]["max_tokens"] == 77
    agg = results["results"]["toy_rsa"]
    for key in ("exact_match,none", "mean_accuracy,none", "majority_accuracy,none", "pass_at_n,none"):
        assert 0.0 <= agg[key] <= 1.0
    assert agg["mean_accuracy,none"] <= agg["pass_at_n,none"]
