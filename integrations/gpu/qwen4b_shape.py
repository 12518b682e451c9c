"""Write a checkpoint directory with Qwen3-4B's shape and SmolLM2's tokenizer, for benchmarks
with random weights (vLLM's ``load_format="dummy"``): the same compute per token as Qwen3-4B,
no weights to carry.  The vocabulary is SmolLM2's 49,152 instead of Qwen's 151,936 (no Qwen
tokenizer can be had offline here), which makes the output layer, and so every benchmark mode
equally, a few percent cheaper.

    python integrations/gpu/qwen4b_shape.py DIR [--tokenizer-from SMOLLM2_DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

#: Qwen3-4B's architecture (its config.json's numbers), with SmolLM2's special tokens
SHAPE = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 2560,
    "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 128, "hidden_act": "silu", "attention_bias": False,
    "attention_dropout": 0.0, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0, "rope_scaling": None, "tie_word_embeddings": True,
    "use_sliding_window": False, "sliding_window": None, "max_window_layers": 36,
    "torch_dtype": "bfloat16", "use_cache": True, "initializer_range": 0.02,
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


def write(out: Path, tokenizer_dir: Path) -> Path:
    """`out` with config.json (Qwen3-4B's shape, the tokenizer's vocabulary and special tokens)
    and the tokenizer files of `tokenizer_dir`."""
    source = json.loads((tokenizer_dir / "config.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    config = {**SHAPE, "vocab_size": source["vocab_size"],
              "bos_token_id": source.get("bos_token_id"), "eos_token_id": source.get("eos_token_id")}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="directory to write")
    p.add_argument("--tokenizer-from", type=Path, default=None,
                   help="checkpoint whose tokenizer to copy (default: the embedded SmolLM2)")
    args = p.parse_args(argv)
    source = args.tokenizer_from
    if source is None:
        from rsa_plugins.embedded import smollm2_checkpoint

        source = smollm2_checkpoint()
    print(write(args.out, source))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
