"""Every shell command in the docs is run somewhere.

Commands come from fenced ``bash`` / ``sh`` / ``console`` blocks in README.md, docs/*.md and
integrations/**/README.md.  Each must either appear verbatim (whitespace normalised) in a file
under tests/ or .ci/, or its block must carry an HTML comment on the line before the fence:

* ``<!-- run-by: tests/test_x.py[, .ci/run] -->``: those files exist and mention the command's
  distinctive parts (program, subcommand, flags, repository paths);
* ``<!-- gpu-only: reason -->``: the command needs a GPU, the model hub or a hosted API.  Where
  cheap, it is still parsed: ``rsa`` by its own parser, ``lm_eval`` by lm-eval's parser with
  the RSA model_args checked by the adapter, ``inspect eval`` by Inspect's parser with the
  ``-S`` arguments checked by the solver.

The doc commands nothing else runs are run here, small, on the real SmolLM2 model.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import load_module

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(bash|sh|shell|console)\s*$")
ANNOTATION = re.compile(r"^<!--\s*(run-by|gpu-only)\s*:\s*(.*?)\s*-->\s*$")
SUBCOMMAND = re.compile(r"^[a-z][a-z0-9_-]*$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Command:
    """One logical shell command from a fenced block of a markdown file."""

    path: Path
    line: int
    text: str
    annotation: str | None = None  # "run-by" or "gpu-only"
    value: str = ""

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}: {self.text}"


def doc_files() -> list[Path]:
    """README.md, docs/*.md and integrations/**/README.md."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "integrations").rglob("README.md"))]
    return [f for f in files if f.is_file()]


def strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` outside quotes, after a blank)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands_in(markdown: str, path: Path = ROOT / "README.md") -> list[Command]:
    """The commands of every shell block of one markdown text."""
    lines = markdown.splitlines()
    found: list[Command] = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i].strip())
        if not fence:
            i += 1
            continue
        prev = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        note = ANNOTATION.match(prev)
        console = fence.group(1) == "console"
        i += 1
        pending, start = "", 0
        while i < len(lines) and not lines[i].strip().startswith("```"):
            raw = lines[i].strip()
            i += 1
            if not pending:
                if console:
                    if not raw.startswith("$ "):
                        continue  # output of the command above
                    raw = raw[2:]
                if not raw or raw.startswith("#"):
                    continue
                start = i
            text = strip_comment(raw)
            if text.endswith("\\"):
                pending += text[:-1].strip() + " "
                continue
            full = " ".join((pending + text).split())
            pending = ""
            if full:
                found.append(Command(path, start, full, note and note.group(1),
                                     note.group(2) if note else ""))
        i += 1
    return found


def all_commands() -> list[Command]:
    return [c for f in doc_files() for c in commands_in(f.read_text(), f)]


def without_substitutions(text: str) -> str:
    """`text` with each ``$( ... )`` (parentheses balanced) replaced by one word."""
    out, i = [], 0
    while (start := text.find("$(", i)) >= 0:
        depth, j = 0, start + 1
        while j < len(text):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth == 0:
                break
            j += 1
        out.append(text[i:start] + "SUBST")
        i = j + 1
    return "".join(out) + text[i:]


def mentions(body: str, part: str) -> bool:
    """`body` mentions `part`; a repository path may also be spelled ``"a" / "b"`` in Python."""
    if part in body:
        return True
    pieces = part.strip("/").split("/")
    return len(pieces) > 1 and all(f'"{p}"' in body for p in pieces)


def simple_commands(text: str) -> list[list[str]]:
    """The words of each simple command of a line (split at ``&&``, ``||``, ``;``, ``|``)."""
    text = without_substitutions(text)
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
    except ValueError:
        words = text.split()
    parts: list[list[str]] = [[]]
    for word in words:
        if word in ("&&", "||", ";", "|", "&"):
            parts.append([])
        else:
            parts[-1].append(word)
    return [p for p in parts if p]


def program_words(words: list[str]) -> list[str]:
    """Words without leading ``VAR=value`` assignments."""
    while words and ASSIGNMENT.match(words[0]):
        words = words[1:]
    return words


def distinctive(text: str) -> list[str]:
    """What a file that runs the command must mention: program, subcommands, flags, repo paths."""
    parts: list[str] = []
    for words in simple_commands(text):
        words = program_words(words)
        if not words:
            continue
        program = Path(words[0]).name
        rest = words[1:]
        if program.startswith("python") and rest[:1] == ["-m"] and len(rest) > 1:
            program, rest = rest[1], rest[2:]
        parts.append(program)
        in_subcommands = True
        if program == "pytest":  # CI runs all of tests/ (.ci/run)
            rest = [w for w in rest if not w.startswith("tests/")]
        for word in rest:
            if word.startswith("-"):
                in_subcommands = False
                flag = word.split("=", 1)[0]
                if len(flag) > 1:
                    parts.append(flag)
            elif in_subcommands and SUBCOMMAND.match(word):
                parts.append(word)
            else:
                in_subcommands = False
                path = word.split("@", 1)[0]
                if "/" in path and (ROOT / path).exists():
                    parts.append(path)
    return list(dict.fromkeys(parts))


def normalised(text: str) -> str:
    return " ".join(text.split())


def runner_texts() -> dict[Path, str]:
    """Files under tests/ (but this one) and .ci/: where a command may appear verbatim."""
    files = [p for p in (ROOT / "tests").rglob("*") if p.suffix in (".py", ".sh", ".md", "")
             and p.is_file() and p.name != Path(__file__).name and "__pycache__" not in p.parts]
    files += [p for p in (ROOT / ".ci").glob("*") if p.is_file()]
    return {p: normalised(p.read_text(errors="replace")) for p in files}


def coverage_problem(command: Command, texts: dict[Path, str]) -> str | None:
    """Why `command` is not covered, or None when it is."""
    if command.annotation == "gpu-only":
        return None if command.value else "gpu-only needs a reason"
    if command.annotation == "run-by":
        names = [n.strip() for n in command.value.split(",") if n.strip()]
        if not names:
            return "run-by names no file"
        missing = [n for n in names if not (ROOT / n).is_file()]
        if missing:
            return f"run-by file(s) missing: {', '.join(missing)}"
        body = "\n".join((ROOT / n).read_text(errors="replace") for n in names)
        absent = [part for part in distinctive(command.text) if not mentions(body, part)]
        return f"{', '.join(names)} never mention {absent}" if absent else None
    wanted = normalised(command.text)
    if any(wanted in text for text in texts.values()):
        return None
    return "not run by any test or .ci script and not annotated"


# ------------------------------------------------------------------------ the extraction itself

SAMPLE = """\
Intro.

<!-- run-by: tests/test_cli.py -->
```bash
rsa eval --task rg:x \\
    --limit 2            # two problems
# a comment line
VAR=1 lm_eval --model rsa-vllm --model_args a=1,b=2 && rsa report "runs/a b"
```

```console
$ rsa run "What # is 2+2?" -N 2
answer: 4
```

```python
rsa_plugins.run("not a shell command")
```
"""


def test_extraction_follows_fences_annotations_continuations_and_comments() -> None:
    cmds = commands_in(SAMPLE)
    assert [c.text for c in cmds] == [
        "rsa eval --task rg:x --limit 2",
        'VAR=1 lm_eval --model rsa-vllm --model_args a=1,b=2 && rsa report "runs/a b"',
        'rsa run "What # is 2+2?" -N 2',
    ]
    assert [(c.annotation, c.value) for c in cmds] == [
        ("run-by", "tests/test_cli.py"), ("run-by", "tests/test_cli.py"), (None, "")]
    assert distinctive(cmds[1].text) == ["lm_eval", "--model", "--model_args", "rsa", "report"]
    assert distinctive("python -m pytest tests/test_docs.py -q") == ["pytest", "-q"]
    assert distinctive('lm_eval --model_args p=$(python -c "print(c())"),n=4 --limit 3') == [
        "lm_eval", "--model_args", "--limit"]
    assert mentions('ROOT / "tasks" / "lm_eval"', "tasks/lm_eval")
    assert not mentions('ROOT / "tasks"', "tasks/lm_eval")
    assert distinctive("inspect eval tasks/inspect/rg_offline.py --solver rsa") == [
        "inspect", "eval", "tasks/inspect/rg_offline.py", "--solver"]


def test_run_by_requires_the_distinctive_parts() -> None:
    cmd = Command(ROOT / "README.md", 1, "rsa eval --task rg:x --no-such-flag", "run-by",
                  "tests/test_cli.py")
    problem = coverage_problem(cmd, {})
    assert problem is not None and "--no-such-flag" in problem
    ok = Command(ROOT / "README.md", 1, "rsa eval --task rg:x --limit 3", "run-by",
                 "tests/test_cli.py")
    assert coverage_problem(ok, {}) is None
    gone = Command(ROOT / "README.md", 1, "rsa eval", "run-by", "tests/test_nothing_here.py")
    assert "missing" in (coverage_problem(gone, {}) or "")
    bare = Command(ROOT / "README.md", 1, "rsa eval --task rg:x")
    assert coverage_problem(bare, {Path("x"): "... rsa eval --task rg:x ..."}) is None
    assert coverage_problem(bare, {Path("x"): "rsa eval --task rg:y"}) is not None


# ------------------------------------------------------------------------ the docs

def test_the_docs_have_commands() -> None:
    cmds = all_commands()
    files = {c.path.name for c in cmds}
    assert {"README.md", "cli.md", "lm-eval.md", "inspect.md", "reproduce.md",
            "getting-started.md"} <= files
    assert len(cmds) > 20


def test_every_doc_command_is_run_somewhere() -> None:
    texts = runner_texts()
    problems = [f"  {c.where()}\n      -> {why}" for c in all_commands()
                if (why := coverage_problem(c, texts))]
    assert not problems, (
        "doc commands that nothing runs (run them in a test, or annotate the block with "
        "<!-- run-by: tests/FILE.py --> or <!-- gpu-only: reason -->):\n" + "\n".join(problems))


# ------------------------------------------------------------------------ gpu-only: parse them

def check_rsa(words: list[str]) -> None:
    from rsa_plugins import bench
    from rsa_plugins.cli import build_parser

    try:
        if words[:1] == ["bench"]:  # `rsa bench` has its own parser (pieces joined by --next)
            first, *rest = bench.command.pieces(words[1:])
            engine = bench.command.inherited_words(bench.build_parser().parse_args(first))
            for piece in (first, *(engine + r for r in rest)):
                bench.build_parser().parse_args(piece)
        else:
            build_parser().parse_args(words)
    except SystemExit as exc:
        raise AssertionError(f"rsa {' '.join(words)}: rejected by rsa's parser") from exc


def check_lm_eval(words: list[str]) -> None:
    """lm-eval's own parser; RSA model_args through the adapter's validation; tasks exist."""
    from lm_eval._cli.harness import HarnessCLI
    from lm_eval.utils import simple_parse_args_string

    from rsa_plugins.adapters.lm_eval.options import RSAOptions

    cli = HarnessCLI()
    argv = words if words[:1] and words[0] in cli._subparsers.choices else ["run", *words]
    try:
        args = cli._parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"lm_eval {' '.join(words)}: rejected by lm-eval's parser") from exc
    if str(args.model).startswith("rsa-"):
        kwargs = simple_parse_args_string(args.model_args) if isinstance(args.model_args, str) \
            else dict(args.model_args or {})
        options = RSAOptions.pop_from(kwargs)  # raises ConfigError on a bad RSA value
        assert options.config.population >= options.config.aggregation_size
    if args.include_path:
        names = {m.group(1) for y in (ROOT / args.include_path).rglob("*.yaml")
                 if (m := re.search(r"^task:\s*(\S+)", y.read_text(), re.M))}
        tasks = args.tasks if isinstance(args.tasks, list) else str(args.tasks).split(",")
        for task in tasks:
            assert task in names, f"task {task} not in {args.include_path}: {sorted(names)}"


def check_inspect(words: list[str]) -> None:
    """Inspect's own parser; ``-S`` arguments through the rsa solver; task files exist."""
    from inspect_ai._cli.eval import eval_command
    from inspect_ai._util.config import parse_cli_args

    from rsa_plugins.adapters.inspect import rsa

    assert words[:1] == ["eval"], f"inspect {words[:1]}: only `inspect eval` is checked"
    try:
        eval_command.make_context("eval", list(words[1:]))
    except Exception as exc:  # click's usage errors
        raise AssertionError(f"inspect {' '.join(words)}: rejected by Inspect: {exc}") from exc
    tasks = [w for w in words[1:] if w.endswith(".py") or ".py@" in w]
    for task in tasks:
        assert (ROOT / task.split("@")[0]).is_file(), f"no task file {task}"
    solver = words[words.index("--solver") + 1] if "--solver" in words else None
    if solver in ("rsa", "rsa_plugins/rsa"):
        s_args = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "-S"]
        rsa(**parse_cli_args(s_args))  # raises RSASolverError on a bad value


def check_vllm_router(words: list[str]) -> None:
    """vLLM's router parses the arguments with its own parser (the `dev` extra installs it)."""
    from vllm_router.launch_router import parse_router_args

    try:
        parse_router_args(list(words))
    except SystemExit as exc:
        raise AssertionError(f"vllm-router {' '.join(words)}: rejected by its parser") from exc


def check_script(words: list[str]) -> None:
    """A repository script exists; compare.py knows the benchmark."""
    script = words[0]
    if not (ROOT / script).is_file():
        return  # another project's script (the paper's code); nothing to check here
    if script.endswith("compare.py"):
        paper = load_module(ROOT / script).PAPER
        assert words[1] in paper, f"compare.py does not know {words[1]}"


#: programs whose commands are not parsed here, and why (any other program fails the check,
#: so a command of a new program needs a parse check or a line here)
UNCHECKED = {
    "pip": "installs packages: its arguments are package names",
    "vllm": "vLLM's own CLI, which needs a GPU to start",
    "nvidia-smi": "a GPU tool",
    "echo": "a shell built-in: nothing to parse",
}


def parse_check(command: Command) -> None:
    """Parse a command that cannot run here with its own program's parser, where cheap."""
    for words in simple_commands(command.text):
        words = program_words(words)
        program = Path(words[0]).name
        if program in ("python", "python3") and words[1:2] == ["-m"]:  # python -m pkg.module
            program, words = words[2].split(".")[0], words[2:]
        if program == "rsa":
            check_rsa(words[1:])
        elif program in ("lm_eval", "lm-eval", "rsa-lm-eval"):
            check_lm_eval(words[1:])
        elif program == "inspect":
            check_inspect(words[1:])
        elif program == "vllm-router":
            check_vllm_router(words[1:])
        elif program in ("python", "python3", "bash") and words[1:2] and \
                not words[1].startswith("-"):
            check_script(words[1:])
        else:
            assert program in UNCHECKED, (
                f"{command.path.name}:{command.line}: no parse check for {program!r}: add one "
                "to tests/test_docs.py, or list the program in UNCHECKED with the reason")


def gpu_only() -> list[Command]:
    return [c for c in all_commands() if c.annotation == "gpu-only"]


@pytest.mark.parametrize("command", gpu_only(), ids=lambda c: f"{c.path.name}:{c.line}")
def test_gpu_only_commands_parse(command: Command) -> None:
    parse_check(command)


def test_the_parse_checks_catch_bad_commands() -> None:
    bad = [
        "rsa eval --task rg:x --no-such-flag",
        "lm_eval --model rsa-vllm --model_args pretrained=x,population=2,aggregation_size=3 "
        "--tasks rsa_aime25 --include_path tasks/lm_eval",
        "lm_eval --model rsa-vllm --model_args pretrained=x --tasks rsa_nope "
        "--include_path tasks/lm_eval",
        "inspect eval tasks/inspect/aime2025.py --solver rsa -S steps=0",
        "inspect eval tasks/inspect/no_such_task.py --solver rsa",
        "python integrations/reproduce/compare.py no_such_benchmark runs/x",
        "vllm-router --port 8000 --policy no_such_policy",
        "frobnicate --all",  # a program nobody checks
    ]
    for text in bad:
        with pytest.raises((AssertionError, ValueError)):
            parse_check(Command(ROOT / "README.md", 1, text))


# ------------------------------------------------------------------------ doc commands run here

def rsa_cli() -> str:
    return str(BIN / "rsa")


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", **extra}
    env.pop("RSA_DEBUG", None)
    return env


def compare(benchmark: str, *results: Path) -> str:
    """Run ``python integrations/reproduce/compare.py BENCHMARK RESULTS`` (as the docs do)."""
    out = subprocess.run([sys.executable, "integrations/reproduce/compare.py", benchmark,
                          *map(str, results)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=cli_env())
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def row(report: str, label: str) -> list[str]:
    """The cells after `label` in compare.py's table: [measured, paper...]."""
    [line] = [ln for ln in report.splitlines() if ln.startswith(label)]
    return line[len(label):].split()


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


@pytest.mark.real
def test_rsa_setup_prints_the_cached_checkpoint(smollm2_dir: Path) -> None:
    """docs/cli.md: ``rsa setup`` (the model is installed and converted by the fixture)."""
    out = subprocess.run([rsa_cli(), "setup"], capture_output=True, text=True, timeout=300,
                         env=cli_env())
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(smollm2_dir)


@pytest.mark.real
def test_rg_games_recipe_and_compare_on_a_real_server(vllm_server, tmp_path: Path) -> None:
    """docs/reproduce.md: ``bash integrations/reproduce/rg_games.sh``, two games, tiny."""
    out_dir = tmp_path / "rg_games"
    env = cli_env(MODEL=f"hosted_vllm/{vllm_server.model_name}", API_BASE=vllm_server.base_url,
                  GAMES="countdown puzzle24", N="2", K="2", T="2", LIMIT="1", MAX_TOKENS="32",
                  RSA=rsa_cli(), PYTHON=sys.executable)
    proc = subprocess.run(["bash", "integrations/reproduce/rg_games.sh", str(out_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads((out_dir / g / "summary.json").read_text())
                 for g in ("countdown", "puzzle24")]
    rsa_runs = [s["methods"]["rsa"] for s in summaries]
    assert all(r["config"]["population"] == 2 and r["config"]["steps"] == 2 for r in rsa_runs)
    weights = [len(s["problems"]) for s in summaries]
    assert weights == [1, 1]

    def pooled(values: list[float]) -> float:
        return sum(v * n for v, n in zip(values, weights)) / sum(weights)

    final = pooled([r["per_step"][-1]["mean_accuracy"] for r in rsa_runs])
    first = pooled([r["per_step"][0]["mean_accuracy"] for r in rsa_runs])
    chosen = pooled([r["accuracy"] for r in rsa_runs])
    report = proc.stdout
    assert "Reasoning Gym games" in report
    assert row(report, "RSA Pass@1 (final mean accuracy)") == [pct(final), "69.0"]
    assert row(report, "single sample (step-1 mean accuracy)") == [pct(first), "53.9"]
    assert row(report, "RSA chosen answer (majority vote)") == [pct(chosen), "not", "recorded"]
    assert "note: measured with population=2 aggregation_size=2 steps=2" in report
    assert "problems measured: 2" in report


@pytest.mark.real
def test_inspect_doc_command_and_compare_on_its_log(vllm_server, tmp_path: Path) -> None:
    """docs/inspect.md's rg_offline command (server port substituted), then compare.py."""
    from inspect_ai.log import read_eval_log

    cmd = [str(BIN / "inspect"), "eval", "tasks/inspect/rg_offline.py", "--solver", "rsa",
           "-S", "population=4", "-S", "aggregation_size=2", "-S", "steps=2",
           "--model", f"vllm/{vllm_server.model_name}", "--model-base-url", vllm_server.base_url,
           "--max-tokens", "32", "--limit", "2",
           "--log-dir", str(tmp_path), "--display", "none"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env=cli_env())
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    [path] = sorted(tmp_path.glob("*.eval"))
    log = read_eval_log(str(path))
    assert len(log.samples) == 2
    steps = [s.store["RSAStore:steps"] for s in log.samples]
    assert all(len(st) == 2 for st in steps)
    final = sum(st[-1]["mean_accuracy"] for st in steps) / 2
    first = sum(st[0]["mean_accuracy"] for st in steps) / 2
    chosen = log.results.scores[0].metrics["accuracy"].value
    report = compare("aime25", tmp_path)
    assert row(report, "RSA Pass@1 (final mean accuracy)") == [pct(final), "73.18", "±", "2.20"]
    assert row(report, "single sample (step-1 mean accuracy)") == [pct(first), "43.91"]
    assert row(report, "RSA chosen answer (majority vote)")[0] == pct(chosen)
    assert "(inspect, 2 problems, population=4 aggregation_size=2 steps=2)" in report


@pytest.mark.real
def test_compare_reads_lm_eval_results(vllm_server, tmp_path: Path) -> None:
    """compare.py on the results file of a tiny real ``lm_eval --model rsa-litellm`` run."""
    out_dir = tmp_path / "lm"
    cmd = [str(BIN / "lm_eval"), "--model", "rsa-litellm", "--model_args",
           f"model=hosted_vllm/{vllm_server.model_name},api_base={vllm_server.base_url},"
           "population=2,aggregation_size=2,steps=2",
           "--tasks", "rsa_rg_arithmetic", "--include_path", str(ROOT / "tasks" / "lm_eval"),
           "--limit", "2", "--gen_kwargs", "max_gen_toks=32", "--apply_chat_template",
           "--output_path", str(out_dir)]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env=cli_env())
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(next(out_dir.rglob("results_*.json")).read_text())
    metrics = results["results"]["rsa_rg_arithmetic"]
    report = compare("hmmt25", out_dir)
    assert row(report, "RSA Pass@1 (final mean accuracy)") == [
        pct(metrics["mean_accuracy,none"]), "47.55", "±", "1.00"]
    assert row(report, "RSA chosen answer (majority vote)")[0] == pct(metrics["exact_match,none"])
    assert row(report, "single sample (step-1 mean accuracy)")[0] == "-"
    assert "(lm-eval, 2 problems, population=2 aggregation_size=2 steps=2)" in report
