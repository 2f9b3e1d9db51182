"""Measure a committed nbcluster instead of the working tree (``--rev``).

The working tree may be mid-edit while a run is going on (a half-saved file fails every
workload). ``--rev REV`` exports ``nbcluster/`` as committed at REV, next to a copy of this
harness, into a temporary directory that the children then run from.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str) -> str:
    """Output of a git command in the repository, or "" if it fails."""
    cmd = ["git", "-C", str(ROOT), *args]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def revision(rev: str | None) -> str:
    """The commit nbcluster is measured at; for the working tree, marked when it differs."""
    if rev is not None:
        return git("rev-parse", "--short", rev) or rev
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "nbcluster") else "")


@contextmanager
def source_root(rev: str | None) -> Iterator[Path]:
    """The directory the children run from: the repository, or an export of ``rev``."""
    if rev is None:
        yield ROOT
        return
    with tempfile.TemporaryDirectory(prefix="nbbench-") as tmp:
        root = Path(tmp)
        _export(rev, root)
        ignore = shutil.ignore_patterns("results", "__pycache__")
        shutil.copytree(ROOT / "benchmarks", root / "benchmarks", ignore=ignore)
        yield root


def _export(rev: str, into: Path) -> None:
    cmd = ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "nbcluster"]
    done = subprocess.run(cmd, check=False, capture_output=True)
    if done.returncode != 0:
        raise SystemExit(f"cannot export nbcluster at {rev}: {done.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12
            archive.extractall(into, filter="data")
        else:
            archive.extractall(into)
