"""Provenance: library versions and the git revision, in run.json and in GeneratedBy."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import lightning
import monai
import nibabel
import pytest
import torch
import torchio
from omegaconf import OmegaConf

from ssl_pretrain import provenance
from ssl_pretrain.run_dir import run_context


def test_library_versions_are_the_installed_ones() -> None:
    versions = provenance.library_versions()
    assert set(versions) == {"torch", "MONAI", "TorchIO", "Lightning", "lightly", "nibabel"}
    assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"] == torch.__version__
    assert versions["MONAI"] == monai.__version__ and versions["nibabel"] == nibabel.__version__
    assert versions["Lightning"] == lightning.__version__ and versions["TorchIO"] == torchio.__version__


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_revision_of_a_checkout_and_of_none(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    provenance.git_revision.cache_clear()
    assert provenance.git_revision(repo) == {"commit": sha, "dirty": False}
    (repo / "a.py").write_text("x = 2\n")
    provenance.git_revision.cache_clear()
    assert provenance.git_revision(repo) == {"commit": sha, "dirty": True}
    provenance.git_revision.cache_clear()
    assert provenance.git_revision(tmp_path / "not-a-checkout") is None
    provenance.git_revision.cache_clear()


def test_run_json_and_generated_by_carry_the_versions(tmp_path: Path) -> None:
    with run_context(OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}}), "predict") as out:
        pass
    record = json.loads((out / "run.json").read_text())
    assert record["libraries"] == provenance.library_versions()
    assert record["git"] == provenance.git_revision()
    entry = provenance.generated_by("bssl predict")
    assert entry["Name"] == "brainstem-ssl" and entry["Libraries"]["torch"] == record["libraries"]["torch"]
    assert f"MONAI {monai.__version__}" in entry["Description"]
    git = provenance.git_revision()
    assert ("GitRevision" in entry) == (git is not None)
