"""Load a PRM directory by the kind its manifest names: encoder, cross-encoder, transformers, LLM judge."""

from __future__ import annotations

import json
from pathlib import Path

from reasonrag.errors import ModelError
from reasonrag.prm.base import PRM

SHIPPED_PRM = Path(__file__).resolve().parents[1] / "weights" / "prm"


def load_prm(path: str | Path | None = None, *, encoder_name: str | None = None) -> PRM:
    """Load a PRM directory by the kind its manifest names (default: the shipped encoder PRM)."""
    path = Path(path) if path is not None else SHIPPED_PRM
    manifest = path / "manifest.json"
    if not manifest.is_file():
        raise ModelError(
            f"no PRM in {path} (expected manifest.json): train one with `reasonrag train-prm --labels FILE --out DIR`"
        )
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8 (a damaged file)
        raise ModelError(f"{manifest}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{manifest}: not a JSON object")
    kind = data.get("kind")
    if kind == "reasonrag-encoder-prm":
        from reasonrag.prm.encoder_prm import EncoderPRM

        return EncoderPRM.load(path, encoder_name=encoder_name)
    if kind == "reasonrag-cross-encoder-prm":
        from reasonrag.prm.cross_encoder import CrossEncoderPRM

        return CrossEncoderPRM.load(path, encoder_name=encoder_name)
    if kind == "reasonrag-transformers-prm":
        from reasonrag.prm.transformers_prm import TransformersPRM

        return TransformersPRM.from_pretrained(path)
    if kind == "reasonrag-llm-judge":
        from reasonrag.prm.judge import LLMJudgePRM

        return LLMJudgePRM.load(path)
    raise ModelError(f"{manifest}: unknown PRM kind {kind!r}")
