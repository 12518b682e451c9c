"""``rsa bench``: RSA over in-process vLLM against raw generation of the same token work.

One process, one vLLM engine, synthetic AIME-sized problems, and generation lengths drawn from
a heavy-tailed (log-normal) distribution like real reasoning traces, forced per request
(``min_tokens = max_tokens = L``, ``ignore_eos``) so every mode does the same token work
whatever the weights (``--load-format dummy`` runs a model's shape with random weights).

Modes (several per invocation, run in the order given; results merge into one JSON file):

- ``lockstep`` (offline engine): RSA with one ``LLM.generate`` per step (`VLLMEngine`);
  ``--save-batches FILE`` writes what it sent, step by step.
- ``raw`` (offline engine): the prompts and lengths ``lockstep`` sent (earlier in the same
  invocation, else ``--replay FILE``), step by step, as plain ``LLM.generate`` calls: the
  same work without RSA, with lockstep's barriers.
- ``barrier-free`` / ``barrier-free-index`` (async engine): RSA on `AsyncVLLMEngine`, each
  problem moving on alone; ``-index`` orders candidates by slot for longer shared prefixes.
  With ``--data-parallel-size D`` (vLLM's own data parallelism), one problem's requests in
  flight share an engine core; ``barrier-free-spread`` leaves every request to vLLM's balancer.
- ``bound`` (async engine): the requests an RSA mode sent (the latest earlier in the same
  invocation, else ``--replay FILE``) all submitted at once to `AsyncLLM`: the same token work
  with no step dependencies, the ceiling any scheduling of RSA can approach.

Printed and saved per mode: wall time, generated and prompt tokens, generated tokens/s, the
prefix-cache hit rate (cached / prompt tokens, from vLLM's outputs), the engine-busy fraction
(`rsa_plugins.busy`: time with at least one request inside vLLM / time from the first request
in to the last one out), requests in flight (mean, max) and peak memory of the first GPU of
``CUDA_VISIBLE_DEVICES``, and the settings vLLM ran the engine with (read back from its
config: scheduler budget, CUDA-graph capture, caching); then the wall-time ratios between modes,
with a warning when the modes compared ran with different engine settings.  ``--repeat R`` runs
every mode R times (in rounds): each figure is the median, the wall time also its min and max,
and the ratios come from the medians.  ``--next`` starts another invocation (another workload)
in the same process on the same engine, so the engine starts once: it takes the first one's
arguments but its files, then its own.

    rsa bench --model DIR --load-format dummy --engine offline --modes lockstep --save-batches b.json.gz --out r.json
    rsa bench --model DIR --load-format dummy --engine offline --modes raw --replay b.json.gz --out r.json
    rsa bench --model DIR --load-format dummy --engine async --modes barrier-free,bound --out r.json
    rsa bench --model DIR --engine async --repeat 3 --median 48 --out light.json --next --median 192 --out heavy.json
"""

from .command import build_parser, main
from .meters import MemoryPeak, visible_gpu
from .modes import MODES, check_modes, ratios
from .run import BenchEngine, run_bench, summarize
from .workload import HeavyTail, load_batches, save_batches, synthetic_problems, workload

__all__ = ["BenchEngine", "HeavyTail", "MODES", "MemoryPeak", "build_parser", "check_modes",
           "load_batches", "main", "ratios", "run_bench", "save_batches", "summarize",
           "synthetic_problems", "visible_gpu", "workload"]
