"""Generate a tiny DeepSeek-R1-Distill-style model for the lab and GPU proofs.

The checkpoint is a real ``Qwen2ForCausalLM`` (the architecture of the R1-Distill-Qwen models) with
an R1 tokenizer and chat template, so vLLM's loader, attention, chat template and the
``deepseek_r1`` reasoning parser all run for real. Its weights are constructed, not trained: the
attention and MLP weights are small random values, and the embeddings and ``lm_head`` plant a bigram
chain in the residual stream, so whatever the prompt, the model answers with a fixed reasoning
sentence, ``</think>``, a fixed reply and end-of-sentence. That makes its output checkable
(non-degenerate, reasoning split, readable in a browser) while every layer still computes.

Deterministic: the same parameters give byte-identical files (seeded RNG, sorted JSON).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"

# What the model says. Every word is distinct so each token has exactly one successor.
REASONING_TEXT = "Reasoning: greet politely, keep it short;"
REPLY_TEXT = " Hello from r1deploy! This lab model runs on vLLM."

# Qwen2's pre-tokenizer split pattern (tokenizer.json of the Qwen2/R1-Distill-Qwen models).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The DeepSeek-R1-Distill chat template, reduced to what text chat uses: no system prompt is
# recommended, but one is placed first if given; the generation prompt opens the reasoning block.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(system_prompt='') %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% set ns.system_prompt = message['content'] %}{% endif %}{% endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set content = message['content'] or '' %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)

# Training text for the byte-level BPE: the model's own sentences (repeated so every word becomes
# one token) and some ordinary prose so user prompts tokenize into real subwords.
_PROSE = """
An operator deploys a serving cluster on old GPU servers. The inventory lists the head node, the
workers and the web front end. Ansible checks the plan before it changes anything, installs the
driver, the runtime and the model, starts Ray on every node and launches the API server. People
open the chat page, ask a question and read the answer as it streams. What is two plus two? Please
reason step by step, and put your final answer within a box. Tell me a short story about a robot
who learns to paint. Summarise the benefits of pipeline parallelism across machines.
"""


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of the generated model. Defaults: 8 heads and 4 KV heads so TP 1, 2 and 4 are valid."""

    hidden_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    intermediate_size: int = 512
    vocab_size: int = 1024
    max_position_embeddings: int = 4096
    seed: int = 20250120  # DeepSeek-R1's release date

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def validate(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        # vLLM's CPU attention accepts head sizes 32, 64, 80, 96, 112, 128 (16 fails).
        if self.head_dim < 32:
            raise ValueError(f"head_dim {self.head_dim} is below 32, which vLLM's attention backends refuse")

    def fingerprint(self) -> str:
        payload = json.dumps(
            {
                **asdict(self),
                "reasoning": REASONING_TEXT,
                "reply": REPLY_TEXT,
                "template": CHAT_TEMPLATE,
                "generator": 1,
            },
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _train_tokenizer(spec: TinyModelSpec):  # -> tokenizers.Tokenizer
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - 8,  # room for the added tokens below
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [_PROSE] * 4 + [REASONING_TEXT + REPLY_TEXT] * 200
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    # Non-special, so vLLM's reasoning parser sees <think>/</think> in the decoded text.
    tokenizer.add_tokens([USER, ASSISTANT, THINK, END_THINK])
    return tokenizer


def _token_chain(tokenizer) -> list[int]:
    """Token ids the model emits after the generation prompt, ending with EOS."""
    reasoning = tokenizer.encode(REASONING_TEXT, add_special_tokens=False).ids
    reply = tokenizer.encode(REPLY_TEXT, add_special_tokens=False).ids
    chain = [*reasoning, tokenizer.token_to_id(END_THINK), *reply, tokenizer.token_to_id(EOS)]
    if len(set(chain)) != len(chain):
        raise ValueError("the model's sentences must tokenize into distinct tokens")
    return chain


def _weights(spec: TinyModelSpec, chain: list[int]) -> dict:
    import numpy as np

    rng = np.random.default_rng(spec.seed)
    h, v = spec.hidden_size, spec.vocab_size
    kv = spec.num_key_value_heads * spec.head_dim

    def unit_rms(x: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True))

    # Embeddings: every token outside the chain shares a "default" direction, so its successor is
    # the chain's first token; chain tokens get their own directions, orthogonal to the default one.
    default = unit_rms(rng.standard_normal(h))
    own = rng.standard_normal((v, h))
    own -= np.outer(own @ default, default) / (default @ default)
    own = unit_rms(own)
    embed = unit_rms(0.8 * default + 0.6 * own)
    emitted = chain[:-1]  # tokens that have a successor in the chain
    embed[emitted] = own[emitted]

    # lm_head row t = directions of the tokens whose successor is t; ~25 logits of margin.
    scale = 0.1
    lm_head = np.zeros((v, h))
    lm_head[chain[0]] = scale * default
    for current, successor in zip(emitted, chain[1:], strict=True):
        lm_head[successor] = scale * own[current]

    def small(*shape: int) -> np.ndarray:
        # Real but small attention/MLP contributions: every layer computes, the chain dominates.
        return 0.01 * rng.standard_normal(shape)

    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": embed,
        "model.norm.weight": np.ones(h),
        "lm_head.weight": lm_head,
    }
    for i in range(spec.num_hidden_layers):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": np.ones(h),
            p + "post_attention_layernorm.weight": np.ones(h),
            p + "self_attn.q_proj.weight": small(h, h),
            p + "self_attn.q_proj.bias": small(h),
            p + "self_attn.k_proj.weight": small(kv, h),
            p + "self_attn.k_proj.bias": small(kv),
            p + "self_attn.v_proj.weight": small(kv, h),
            p + "self_attn.v_proj.bias": small(kv),
            p + "self_attn.o_proj.weight": small(h, h),
            p + "mlp.gate_proj.weight": small(spec.intermediate_size, h),
            p + "mlp.up_proj.weight": small(spec.intermediate_size, h),
            p + "mlp.down_proj.weight": small(h, spec.intermediate_size),
        }
    return {name: t.astype(np.float16) for name, t in sorted(tensors.items())}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def generate(dest: Path, spec: TinyModelSpec | None = None) -> Path:
    """Write the model folder ``dest`` (replaced atomically). Returns ``dest``."""
    from safetensors.numpy import save_file

    spec = spec or TinyModelSpec()
    spec.validate()
    tokenizer = _train_tokenizer(spec)
    chain = _token_chain(tokenizer)
    ids = {name: tokenizer.token_to_id(name) for name in (BOS, EOS, PAD)}

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tiny-", dir=dest.parent))
    try:
        save_file(_weights(spec, chain), str(work / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save(str(work / "tokenizer.json"))
        _write_json(
            work / "config.json",
            {
                "architectures": ["Qwen2ForCausalLM"],
                "model_type": "qwen2",
                "attention_dropout": 0.0,
                "bos_token_id": ids[BOS],
                "eos_token_id": ids[EOS],
                "hidden_act": "silu",
                "hidden_size": spec.hidden_size,
                "initializer_range": 0.02,
                "intermediate_size": spec.intermediate_size,
                "max_position_embeddings": spec.max_position_embeddings,
                "max_window_layers": spec.num_hidden_layers,
                "num_attention_heads": spec.num_attention_heads,
                "num_hidden_layers": spec.num_hidden_layers,
                "num_key_value_heads": spec.num_key_value_heads,
                "rms_norm_eps": 1e-06,
                "rope_theta": 10000.0,
                "sliding_window": None,
                "tie_word_embeddings": False,
                # As the R1 distills ship: bfloat16 checkpoints, which V100s must serve as float16.
                "torch_dtype": "bfloat16",
                "use_cache": True,
                "use_sliding_window": False,
                "vocab_size": spec.vocab_size,
            },
        )
        _write_json(
            work / "tokenizer_config.json",
            {
                "add_bos_token": True,
                "add_eos_token": False,
                "bos_token": BOS,
                "eos_token": EOS,
                "pad_token": PAD,
                "clean_up_tokenization_spaces": False,
                "model_max_length": spec.max_position_embeddings,
                "tokenizer_class": "Qwen2Tokenizer",
                "chat_template": CHAT_TEMPLATE,
            },
        )
        # The sampling DeepSeek recommends; vLLM uses it as the default (tests send temperature 0).
        _write_json(
            work / "generation_config.json",
            {
                "bos_token_id": ids[BOS],
                "eos_token_id": ids[EOS],
                "do_sample": True,
                "temperature": 0.6,
                "top_p": 0.95,
            },
        )
        _write_json(
            work / "r1deploy-tiny.json",
            {
                "fingerprint": spec.fingerprint(),
                "spec": asdict(spec),
                "reasoning": REASONING_TEXT,
                "reply": REPLY_TEXT.strip(),
            },
        )
        work.chmod(0o755)  # mkdtemp makes 0700; the model is copied to hosts as readable files
        for file in work.iterdir():
            file.chmod(0o644)
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return dest


def ensure_tiny_model(dest: Path, spec: TinyModelSpec | None = None) -> Path:
    """Generate the model at ``dest`` unless the same spec is already there."""
    spec = spec or TinyModelSpec()
    marker = Path(dest) / "r1deploy-tiny.json"
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") == spec.fingerprint():
                return Path(dest)
        except (OSError, ValueError):
            pass
    return generate(Path(dest), spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the tiny R1-style lab model.")
    parser.add_argument("dest", type=Path)
    defaults = TinyModelSpec()
    for field in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "seed",
    ):
        parser.add_argument("--" + field.replace("_", "-"), type=int, default=getattr(defaults, field))
    args = parser.parse_args(argv)
    spec = TinyModelSpec(**{k: v for k, v in vars(args).items() if k != "dest"})
    try:
        path = ensure_tiny_model(args.dest, spec)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
