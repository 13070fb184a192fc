"""Writing model directories so that a reader never sees half of one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reasonrag.errors import ModelError


def swap_in(tmp: Path, target: Path) -> None:
    """Move the finished directory `tmp` to `target`, replacing an older one there in two renames (an
    older one a kill left moved aside between them is deleted once the new one is in place)."""
    old = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (on Windows, where os.kill would end it, assume it does)."""
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def staging_prefix(name: str) -> str:
    """The name start of a file or directory staged for `name` by this process: `.NAME.tmp-PID-`."""
    return f".{name}.tmp-{os.getpid()}-"


def remove_dead_staging(directory: Path, name: str) -> None:
    """Delete what writers of `name` killed mid-write (kill -9, power loss) left staged in `directory`;
    a live writer's staging is left alone."""
    for leftover in directory.glob(f".{name}.tmp-*"):
        try:
            pid = int(leftover.name.removeprefix(f".{name}.tmp-").split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not pid_alive(pid):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """A fresh sibling directory to write a model into; it replaces `target` only if the block finishes.

    A reader (or a resumed run) never sees half a model, or one model's weights under another's manifest;
    and what an earlier, killed write left staged beside `target` is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(target.parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=staging_prefix(target.name), dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a saved model is an ordinary directory
    try:
        yield tmp
        swap_in(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def parse_json(text: str | bytes) -> Any:
    """`json.loads`, where every malformed line is a `json.JSONDecodeError` (or, for bytes, a
    UnicodeDecodeError): a 5000-digit number (ValueError) or 50,000 nested brackets (RecursionError)
    included, so a loader that names the bad line catches one exception rather than crashing."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None
    except ValueError as exc:  # e.g. an integer longer than Python converts
        raise json.JSONDecodeError(str(exc).split(";")[0], "", 0) from None


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def read_manifest(
    directory: Path, kind: str, what: str, numeric_features: int, hint: str = ""
) -> dict[str, Any]:
    """A model directory's manifest.json, checked for its kind and feature version (clear errors if not)."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
        raise ModelError(f"{directory}: no readable manifest.json ({exc}){hint}") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{directory}/manifest.json: not a JSON object{hint}")
    if manifest.get("kind") != kind:
        raise ModelError(f"{directory}: not {what} (kind {manifest.get('kind')!r})")
    if manifest.get("numeric_features") != numeric_features:
        raise ModelError(f"{directory}: made by another version of {what} (features differ)")
    return manifest


def config_from_manifest(manifest: dict[str, Any], cls: type, directory: Path) -> Any:
    """The config dataclass `cls` from a manifest's "config"; ModelError when it does not fit."""
    config = manifest.get("config", {})
    try:
        if not isinstance(config, dict):
            raise TypeError(f"'config' is a {type(config).__name__}, not an object")
        return cls(**config)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{directory}/manifest.json: a config this version cannot use ({exc})") from None


@contextmanager
def quiet_loading() -> Iterator[None]:
    """No "Loading weights" bars while our own models load (from the CLI or the Python API alike); the
    caller's own setting is back afterwards."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        yield
        return
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            with warnings.catch_warnings():  # the hub warns when its own env var keeps its bars off
                warnings.simplefilter("ignore")
                hf_logging.enable_progress_bar()
