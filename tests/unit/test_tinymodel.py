"""The generated lab model: deterministic files, and an R1-shaped tokenizer and template."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from r1deploy import tinymodel


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_generation_is_byte_identical(tmp_path: Path) -> None:
    first = tinymodel.generate(tmp_path / "a")
    second = tinymodel.generate(tmp_path / "b")
    assert _digest(first) == _digest(second)
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    } <= set(_digest(first))


def test_config_matches_r1_distill_shape(tmp_path: Path) -> None:
    folder = tinymodel.generate(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert config["torch_dtype"] == "bfloat16"  # what the distills ship; V100 must serve float16
    assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    generation = json.loads((folder / "generation_config.json").read_text())
    assert (generation["temperature"], generation["top_p"]) == (0.6, 0.95)


def test_chat_template_opens_the_reasoning_block(tmp_path: Path) -> None:
    jinja2 = pytest.importorskip("jinja2")
    folder = tinymodel.generate(tmp_path / "m")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    prompt = jinja2.Template(config["chat_template"]).render(
        messages=[{"role": "user", "content": "hi"}],
        add_generation_prompt=True,
        bos_token=config["bos_token"],
    )
    assert prompt == f"{tinymodel.BOS}{tinymodel.USER}hi{tinymodel.ASSISTANT}{tinymodel.THINK}\n"


def test_tokenizer_keeps_think_tags_as_single_non_special_tokens(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    folder = tinymodel.generate(tmp_path / "m")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    encoded = tokenizer.encode("<think>\nx</think> y", add_special_tokens=False)
    assert "<think>" in encoded.tokens and "</think>" in encoded.tokens
    # Non-special: decoding keeps them, which is what the deepseek_r1 reasoning parser needs.
    assert "</think>" in tokenizer.decode(encoded.ids, skip_special_tokens=True)


def test_ensure_reuses_an_identical_model(tmp_path: Path) -> None:
    folder = tinymodel.ensure_tiny_model(tmp_path / "m")
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    tinymodel.ensure_tiny_model(tmp_path / "m")
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="head_dim"):
        tinymodel.TinyModelSpec(hidden_size=128, num_attention_heads=8).validate()
    with pytest.raises(ValueError, match="num_key_value_heads"):
        tinymodel.TinyModelSpec(num_attention_heads=8, num_key_value_heads=3).validate()
