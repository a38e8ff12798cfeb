"""Tiny synthetic BIDS datasets for tests: fast to write, with known geometry and labels.

Each subject is an ellipsoidal "brain" (WM core, GM shell, CSF rim) with a cubic "brainstem" block
(region ``brainstem``) and a "thalamus" block (region ``thalamus``) holding GM and WM voxels, so every
stage and ROI has something to learn and measure. Intensities follow the tissue ordering of real MRI
(T1w: WM > GM > CSF; T2w: CSF > GM > WM; FA high in WM; MD high in CSF).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

TISSUE_TSV = "index\tname\n0\tbackground\n1\tCSF\n2\tGM\n3\tWM\n"
REGIONS_TSV = "index\tname\n0\tbackground\n1\tthalamus\n5\tbrainstem\n9\tcortex\n10\tcerebral_wm\n"
MEANS = {  # tissue -> mean intensity per modality (bg, CSF, GM, WM)
    "T1w": (0.0, 300.0, 600.0, 900.0),
    "T2w": (0.0, 1500.0, 800.0, 500.0),
    "FA": (0.0, 0.05, 0.15, 0.55),
    "MD": (0.0, 3.0e-3, 0.8e-3, 0.7e-3),
}
DWI_ENTITIES = {"FA": "space-T1w_model-tensor_param-fa_dwimap", "MD": "space-T1w_model-tensor_param-md_dwimap"}


def synthetic_labels(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and region maps of one synthetic brain of ``shape`` voxels."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    tissue = np.zeros(shape, np.int16)
    tissue[r < 0.95] = 1
    tissue[r < 0.85] = 2
    tissue[r < 0.65] = 3
    regions = np.zeros(shape, np.int16)
    regions[(tissue == 2)] = 9
    regions[(tissue == 3)] = 10
    x, y, z = grid
    stem = (np.abs(x) < 0.2) & (np.abs(y + 0.1) < 0.2) & (z < -0.05) & (z > -0.6)
    regions[stem] = 5
    tissue[stem & (np.abs(x) < 0.08)] = 2  # a grey "nucleus" column inside white "tracts"
    tissue[stem & (np.abs(x) >= 0.08)] = 3
    thal = (np.abs(x) < 0.35) & (np.abs(y - 0.15) < 0.15) & (np.abs(z - 0.15) < 0.15)
    regions[thal] = 1
    tissue[thal & (np.abs(x) < 0.12)] = 3
    tissue[thal & (np.abs(x) >= 0.12)] = 2
    return tissue, regions


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))


def write_synthetic_bids(
    root: str | Path,
    n_subjects: int = 4,
    shape: Sequence[int] = (28, 32, 28),
    spacing: float = 2.0,
    sessions: Sequence[str] | None = None,
    missing: dict[str, Sequence[str]] | None = None,
    seed: int = 0,
) -> Path:
    """Write a small BIDS dataset and return its root.

    Args:
        root: output directory.
        n_subjects: subjects ``01..n``; odd ones are ``HC``, even ones ``ALS``.
        shape: voxel grid of every image.
        spacing: isotropic voxel size in mm.
        sessions: session labels (``None``: no session level).
        missing: subject label -> modalities (``T1w``, ``T2w``, ``FA``, ``MD``, ``tissue``, ``regions``) to leave out.
        seed: noise seed.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    missing = missing or {}
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -np.asarray(shape) * spacing / 2
    tissue, regions = synthetic_labels(shape)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "synthetic", "BIDSVersion": "1.9.0"}))
    rows = ["participant_id\tgroup\tage\tsex"]
    for derivative in ("dwi", "labels"):
        d = root / "derivatives" / derivative
        d.mkdir(parents=True, exist_ok=True)
        (d / "dataset_description.json").write_text(
            json.dumps({"Name": derivative, "BIDSVersion": "1.9.0", "DatasetType": "derivative"})
        )
    for i in range(1, n_subjects + 1):
        sub = f"{i:02d}"
        rows.append(f"sub-{sub}\t{'HC' if i % 2 else 'ALS'}\t{50 + i}\t{'F' if i % 3 else 'M'}")
        gone = set(missing.get(sub, ()))
        for ses in sessions or [None]:
            rel = Path(f"sub-{sub}") / (f"ses-{ses}" if ses else "")
            stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
            for modality, means in MEANS.items():
                if modality in gone:
                    continue
                img = np.asarray(means, np.float32)[tissue]
                img = img + rng.normal(0, 0.03 * max(means), shape).astype(np.float32) * (tissue > 0)
                if modality in DWI_ENTITIES:
                    path = root / "derivatives" / "dwi" / rel / "dwi" / f"{stem}_{DWI_ENTITIES[modality]}.nii.gz"
                else:
                    path = root / rel / "anat" / f"{stem}_{modality}.nii.gz"
                _save(path, np.clip(img, 0, None), affine)
            for desc, labels, tsv in (("tissue", tissue, TISSUE_TSV), ("regions", regions, REGIONS_TSV)):
                if desc in gone:
                    continue
                base = root / "derivatives" / "labels" / rel / "anat" / f"{stem}_desc-{desc}_dseg"
                _save(base.with_name(base.name + ".nii.gz"), labels.astype(np.int16), affine)
                base.with_name(base.name + ".tsv").write_text(tsv)
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return root
