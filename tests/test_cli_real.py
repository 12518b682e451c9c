"""The real `rsa` command on the real SmolLM2: over vLLM's OpenAI server and embedded in-process.

The README's first command and the docs' first Python example run here verbatim; their wall
times are printed in the CI log (figures, not assertions: a shared machine's times vary).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rsa_plugins.trace import load
from test_cli import rsa_exe, run_rsa

pytestmark = pytest.mark.real
ROOT = Path(__file__).resolve().parents[1]

SMALL = ["--task", "rg:basic_arithmetic", "--limit", "2", "-N", "2", "-K", "2",
         "--max-tokens", "48"]


def server_args(server) -> list[str]:
    return ["--model", f"hosted_vllm/{server.model_name}", "--api-base", server.base_url]


def events(trace: Path, kind: str) -> list[dict]:
    return [e for e in load(trace) if e["event"] == kind]


def test_eval_compare_on_a_real_server(vllm_server, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    proc = run_rsa("eval", *SMALL, "-T", "2", *server_args(vllm_server), "--compare",
                   "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    methods = summary["methods"]
    assert methods["rsa"]["generations_per_problem"] == 4
    assert methods["majority_vote"]["generations_per_problem"] == 4
    for m in ("majority_vote", "self_refine", "rsa"):
        gens = events(out / f"trace-{m}.jsonl", "generation")
        assert len(gens) == 8
        assert all(g["error"] is None and g["completion_tokens"] > 0 for g in gens)
        assert len(events(out / f"trace-{m}.jsonl", "result")) == 2
    assert methods["rsa"]["tokens"] > methods["rsa"]["completion_tokens"] > 0
    assert "generations per problem: rsa 4, majority vote 4" in proc.stdout
    assert "single sample" in proc.stdout
    assert (out / "report.png").stat().st_size > 10_000


def test_run_prints_answer_votes_and_steps(vllm_server, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_rsa("run", "What is 2 + 3? End with 'Answer: <number>'.", "-N", "3", "-K", "2",
                   "-T", "2", "--max-tokens", "48", *server_args(vllm_server), "--out", str(out),
                   timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads((out / "summary.json").read_text())["answer"]
    assert f"answer: {answer}" in proc.stdout
    assert "votes (" in proc.stdout
    rows = [ln.split()[0] for ln in proc.stdout.splitlines() if ln[:1].isdigit()]
    assert rows == ["1", "2"]
    assert len(events(out / "trace.jsonl", "generation")) == 6


def test_interrupted_eval_reports_finished_steps_and_resumes(vllm_server, tmp_path: Path) -> None:
    out = tmp_path / "stop"
    args = ["eval", *SMALL, "-T", "5", *server_args(vllm_server), "--out", str(out)]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err_file:
        proc = subprocess.Popen([*rsa_exe(), *args], stdout=subprocess.DEVNULL, stderr=err_file,
                                env=env)
    trace = out / "trace.jsonl"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if trace.exists() and len(events(trace, "step")) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert proc.returncode == 130, err[-3000:]
    assert "rsa: interrupted" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    steps = events(trace, "step")
    finished = {}
    for s in steps:
        finished.setdefault(s["problem"], set()).add(s["step"])
    assert not events(trace, "result")

    report = run_rsa("report", str(trace))
    assert report.returncode == 0, report.stderr
    rows = [ln.split() for ln in report.stdout.splitlines() if ln[:1].isdigit()]
    depth = max(max(v) for v in finished.values())
    assert [int(r[0]) for r in rows] == list(range(1, depth + 1))
    assert int(rows[0][1]) == len(finished)  # problems that finished step 1
    assert "incomplete run" in report.stdout
    plots = [ln.split(": ", 1)[1] for ln in report.stdout.splitlines() if ln.startswith("plot: ")]
    assert plots == [str(out / "report.png")] and (out / "report.png").is_file(), report.stdout

    again = run_rsa(*args, timeout=900)  # same --out: resumes from the checkpoints
    assert again.returncode == 0, again.stderr[-3000:]
    keys = {(g["problem"], g["step"], g["slot"]) for g in events(trace, "generation")
            if g["error"] is None}
    assert len(keys) == 2 * 2 * 5
    assert len(events(trace, "result")) == 2
    assert len(events(trace, "run")) == 2


@pytest.mark.slow  # the README command below runs the same engine, larger, by default
def test_embedded_default_runs_in_process(smollm2_dir: Path, tmp_path: Path) -> None:
    """No --model: SmolLM2 on in-process vLLM (the README's first command, smaller)."""
    out = tmp_path / "emb"
    proc = run_rsa("eval", *SMALL, "-T", "2", "--out", str(out), timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = events(out / "trace.jsonl", "run")[0]
    assert run["engine"] == "vllm"
    assert "embedded" in run["model"]
    gens = events(out / "trace.jsonl", "generation")
    assert len(gens) == 8
    assert all(g["error"] is None and g["completion_tokens"] > 0 for g in gens)
    assert all(g["completion_tokens"] <= 48 for g in gens)
    rows = [ln.split()[0] for ln in proc.stdout.splitlines() if ln[:1].isdigit()]
    assert rows == ["1", "2"]
    assert (out / "report.png").is_file()


def readme_first_command() -> tuple[str, str]:
    """The README's first shell command, split into its install part and its main job."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)\n```", text, re.S)
    assert block, "README.md has no bash block"
    install, sep, job = block.group(1).strip().partition(" && ")
    assert install == "bash .ci/install" and sep, "the README starts with install && main job"
    return install, job


def verbatim_dir(tmp_path: Path) -> Path:
    """A working directory where the README's relative ``.venv/bin/...`` paths resolve to this
    environment (CI's .venv) and outputs stay out of the checkout."""
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.executable).resolve().parents[1]
                                if not (ROOT / ".venv").exists() else ROOT / ".venv")
    return work


def test_readme_first_command_verbatim(smollm2_dir: Path, tmp_path: Path, show) -> None:
    """The README's main job as written (.ci/run did the install part before the tests)."""
    _, job = readme_first_command()
    work = verbatim_dir(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RSA_DEBUG", None)
    started = time.monotonic()
    proc = subprocess.run(["bash", "-c", job], cwd=work, capture_output=True, text=True,
                          timeout=1500, env=env)
    wall = time.monotonic() - started
    show(f"\n[README first command] `{job}`: {wall:.0f} s wall, load "
         f"{os.getloadavg()[0]:.1f}\n{proc.stdout}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [out] = list((work / "runs").iterdir())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith("SmolLM2-135M-Instruct (embedded")
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    for name, method in summary["methods"].items():
        assert len(method["per_step"]) == method["config"]["steps"]
        assert f"{name}: accuracy" in proc.stdout
    assert "Traceback" not in proc.stderr
    noise = [ln for ln in proc.stderr.splitlines() if re.search(r"\b(INFO|WARNING)\b", ln)]
    assert noise == [], noise[:5]  # vLLM's and LiteLLM's logs are off without -v


def docs_python_example() -> str:
    """The first Python block of docs/python.md."""
    text = (ROOT / "docs" / "python.md").read_text()
    block = re.search(r"```python\n(.*?)\n```", text, re.S)
    assert block, "docs/python.md has no python block"
    return block.group(1)


def test_docs_python_example_runs_as_a_plain_script(smollm2_dir: Path, tmp_path: Path,
                                                    show) -> None:
    """docs/python.md's first example, verbatim, as a script without a __main__ guard: the
    embedded model from Python, quiet (only what the script prints reaches stdout)."""
    code = docs_python_example()
    assert "__main__" not in code and 'model="embedded"' in code
    script = tmp_path / "example.py"
    script.write_text(code + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1200, env=env)
    wall = time.monotonic() - started
    show(f"\n[docs/python.md example] {wall:.0f} s wall, load {os.getloadavg()[0]:.1f}\n"
         f"{proc.stdout}{proc.stderr[-2000:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer_and_votes, shares = proc.stdout.strip().splitlines()  # nothing but the two prints
    assert answer_and_votes.endswith("}") and "{" in answer_and_votes  # answer, then votes
    assert len(json.loads(shares)) == 3  # one majority share per step
    noise = [ln for ln in proc.stderr.splitlines() if re.search(r"\b(INFO|WARNING)\b", ln)]
    assert noise == [], noise[:5]
