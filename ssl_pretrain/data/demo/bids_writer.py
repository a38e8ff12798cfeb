"""Writing the demo cohort as a BIDS dataset, all-or-nothing.

Layout (the same as ``tests/synthetic.py`` writes)::

    dataset_description.json  README  participants.tsv  participants.json
    sub-XX/anat/sub-XX_T1w.nii.gz (+ .json)  sub-XX_T2w.nii.gz (+ .json)
    derivatives/dwi/      sub-XX/dwi/sub-XX_space-T1w_model-tensor_param-{fa,md}_dwimap.nii.gz
    derivatives/labels/   sub-XX/anat/sub-XX_desc-{tissue,regions}_dseg.nii.gz (+ same-stem .tsv, .json)
    derivatives/simulation/subject_truth.tsv (+ .json)  effects.json

Every dataset (the raw one and each derivative) passes the BIDS validator on its own: the BEP016 diffusion
names (not yet in the specification) and the simulation's tables are listed in ``.bidsignore``; the label
maps' ``dseg.tsv`` have a ``color`` column and their sidecars a ``SpatialReference`` (the subject's T1w,
a BIDS URI resolved by the ``DatasetLinks`` of ``dataset_description.json``); ``GeneratedBy`` records the
toolkit's revision and library versions (:func:`ssl_pretrain.provenance.generated_by`).

Everything is built in a hidden sibling directory and renamed into place at the end, so an
interrupted run leaves nothing that looks complete; a directory that holds something other than a
demo cohort is refused unless ``overwrite`` is set.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from types import TracebackType

import nibabel as nib
import numpy as np

import ssl_pretrain
from ssl_pretrain.data.demo import truth
from ssl_pretrain.data.demo.simulate import SimulationSettings, SubjectData
from ssl_pretrain.data.labels import regions_dseg_tsv, tissue_dseg_tsv
from ssl_pretrain.errors import DataError
from ssl_pretrain.provenance import generated_by

log = logging.getLogger(__name__)

GENERATOR = "brainstem-ssl demo-data"
BIDS_VERSION = "1.9.0"
DWI_STEMS = {"fa": "space-T1w_model-tensor_param-fa_dwimap", "md": "space-T1w_model-tensor_param-md_dwimap"}
# .bidsignore of each derivative: names a BIDS extension proposal defines (BEP016 diffusion model maps) and
# the simulation's own tables, none of which the validator's schema knows yet
BIDSIGNORE = {"dwi": "*_dwimap.nii.gz\n*_dwimap.json\n", "simulation": "subject_truth.*\neffects.json\n"}
DERIVATIVE_DESCRIPTIONS = {
    "dwi": "Simulated diffusion-tensor maps (FA, MD in mm^2/s) on their own diffusion grid.",
    "labels": "Ground-truth tissue (0 bg, 1 CSF, 2 GM, 3 WM) and region label maps of the simulation.",
    "simulation": "True per-subject effects and parameters of the simulation.",
}
README = """\
SIMULATED DATA: brainstem-ssl demo cohort
==========================================

This dataset is a SIMULATION written by `bssl demo-data` (brainstem-ssl {version}). No person was
scanned. It imitates a study of {n_hc} healthy controls (HC) and {n_als} ALS patients so that the
toolkit can be run and checked end to end; it says nothing about ALS.

How it was made: the ICBM152 2009a template (GM/WM probability maps) and the Neuromorphometrics and
Juelich atlases were deformed per subject (head size, pose, smooth non-linear shape); T1w and T2w come
from a spin-echo signal model over tissue fractions with per-subject relaxation times, a bias field,
motion/ghosting in some images, and Rician noise; FA/MD maps from tissue and tract maps at
{dwi} mm with a small misregistration. Patients have a lower-brainstem (pons + medulla) volume loss
(mean {atrophy:.3g}) and a corticospinal-tract FA reduction (mean {fa:.3g}).

The true effects and every per-subject parameter are in derivatives/simulation/. The label maps in
derivatives/labels/ are the simulation's ground truth, including a modelled grey/white split inside
the brainstem (see docs/demo_cohort.md in brainstem-ssl).

Seed: {seed}. Voxel size: {spacing} mm.
"""


def _description(name: str, dataset_type: str, description: str) -> dict[str, object]:
    desc: dict[str, object] = {
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": dataset_type,
        "License": "CC0",
        "Authors": ["brainstem-ssl (simulation)"],
        "GeneratedBy": [generated_by(description, name=GENERATOR)],
    }
    if dataset_type == "derivative":
        desc["DatasetLinks"] = {"raw": "../../"}  # derivatives/<name>/ inside the simulated raw dataset
        desc["SourceDatasets"] = [{"URL": "../../"}]
    return desc


def is_demo_cohort(root: str | Path) -> bool:
    """Whether ``root`` holds a cohort written by ``bssl demo-data`` (its dataset_description says so)."""
    path = Path(root) / "dataset_description.json"
    try:
        generated = json.loads(path.read_text()).get("GeneratedBy", [])
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(generated, list) and any(isinstance(g, dict) and g.get("Name") == GENERATOR for g in generated)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Save a 3D array as NIfTI-1 with ``affine`` as both qform and sform (scanner space, mm)."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _write_json(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def _write_tsv(path: Path, rows: list[dict[str, object]]) -> None:
    columns = list(rows[0])
    lines = ["\t".join(columns)] + ["\t".join(str(row[c]) for c in columns) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


class CohortWriter:
    """Context manager that writes a demo cohort into a temporary sibling of ``root`` and swaps it in.

    Args:
        root: target directory.
        settings: the simulation settings (recorded in the sidecars).
        overwrite: allow replacing a non-empty directory that is not a demo cohort.

    Raises:
        DataError: ``root`` is a file, or a non-empty directory that is not a demo cohort.
    """

    def __init__(self, root: str | Path, settings: SimulationSettings, *, overwrite: bool = False) -> None:
        self.root = Path(root).expanduser().absolute()
        self.settings = settings
        if self.root.exists() and not self.root.is_dir():
            raise DataError(self.root, "exists and is not a directory; choose another data.root")
        if self.root.is_dir() and any(self.root.iterdir()) and not is_demo_cohort(self.root) and not overwrite:
            raise DataError(
                self.root,
                "is not empty and does not hold a demo cohort; refusing to write into it "
                "(choose an empty or new data.root, or pass overwrite=true to replace it)",
            )
        n = settings.n_controls + settings.n_patients
        self.width = max(2, len(str(n)))
        self.tmp = self.root.parent / f".{self.root.name}.partial-{uuid.uuid4().hex[:8]}"
        self.participants: list[dict[str, object]] = []
        self.truth: list[dict[str, object]] = []

    def __enter__(self) -> CohortWriter:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        leftovers = sorted(self.root.parent.glob(f".{self.root.name}.partial-*"))
        if leftovers:
            log.warning("leftovers of interrupted demo-data runs (safe to delete): %s", ", ".join(map(str, leftovers)))
        self.tmp.mkdir()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def subject_id(self, index: int) -> str:
        """BIDS label of subject number ``index`` (zero-padded)."""
        return f"{index:0{self.width}d}"

    def add_subject(self, data: SubjectData) -> None:
        """Write one subject's images, diffusion maps and label maps."""
        sub = f"sub-{self.subject_id(data.index)}"
        t = self.tmp
        for weighting, image in (("T1w", data.t1w), ("T2w", data.t2w)):
            save_nifti(t / sub / "anat" / f"{sub}_{weighting}.nii.gz", image, data.anat_affine)
            tr, te = data.truth[f"{weighting.lower()}_tr_ms"], data.truth[f"{weighting.lower()}_te_ms"]
            _write_json(
                t / sub / "anat" / f"{sub}_{weighting}.json",
                {
                    "RepetitionTime": round(float(tr) / 1000, 6),  # type: ignore[arg-type]
                    "EchoTime": round(float(te) / 1000, 6),  # type: ignore[arg-type]
                    "MagneticFieldStrength": 3,
                    "PulseSequenceType": "spin echo (simulated)",
                    "Simulated": True,
                },
            )
        for param, vol in (("fa", data.fa), ("md", data.md)):
            save_nifti(
                t / "derivatives" / "dwi" / sub / "dwi" / f"{sub}_{DWI_STEMS[param]}.nii.gz", vol, data.dwi_affine
            )
        labels = t / "derivatives" / "labels" / sub / "anat"
        tables = {"tissue": tissue_dseg_tsv(), "regions": regions_dseg_tsv(data.region_ids)}
        for desc, vol in (("tissue", data.tissue), ("regions", data.regions)):
            save_nifti(labels / f"{sub}_desc-{desc}_dseg.nii.gz", vol, data.anat_affine)
            (labels / f"{sub}_desc-{desc}_dseg.tsv").write_text(tables[desc])
            sidecar = {
                "Description": f"simulated ground-truth {desc} labels (SIMULATION)",
                "Manual": False,
                "SpatialReference": f"bids:raw:{sub}/anat/{sub}_T1w.nii.gz",
            }
            _write_json(labels / f"{sub}_desc-{desc}_dseg.json", sidecar)
        self.participants.append({"participant_id": sub, "group": data.group, "age": data.age, "sex": data.sex})
        self.truth.append({"participant_id": sub, **data.truth})

    def finish(self, expected: dict[str, float], provenance: dict[str, object]) -> None:
        """Write the dataset-level files and move the cohort into place (replacing an older demo cohort)."""
        s, t = self.settings, self.tmp
        _write_json(
            t / "dataset_description.json",
            _description(
                "brainstem-ssl simulated ALS demo cohort (SIMULATION, not real data)",
                "raw",
                "Simulated multimodal brain MRI shaped like an ALS study; every subject is synthetic.",
            ),
        )
        (t / "README").write_text(
            README.format(
                version=ssl_pretrain.__version__,
                n_hc=s.n_controls,
                n_als=s.n_patients,
                dwi=s.dwi_spacing,
                atrophy=s.brainstem_atrophy,
                fa=s.cst_fa_reduction,
                seed=s.seed,
                spacing=s.spacing,
            )
        )
        _write_tsv(t / "participants.tsv", self.participants)
        _write_json(
            t / "participants.json",
            {
                "group": {"Description": "simulated group", "Levels": {"HC": "healthy control", "ALS": "ALS patient"}},
                "age": {"Description": "simulated age", "Units": "years"},
                "sex": {"Description": "simulated sex", "Levels": {"M": "male", "F": "female"}},
            },
        )
        for name, text in DERIVATIVE_DESCRIPTIONS.items():
            desc = _description(f"brainstem-ssl demo cohort: {name} (SIMULATION)", "derivative", text)
            _write_json(t / "derivatives" / name / "dataset_description.json", desc)
            (t / "derivatives" / name / "README").write_text(f"SIMULATED DATA (bssl demo-data): {text}\n")
            if name in BIDSIGNORE:
                (t / "derivatives" / name / ".bidsignore").write_text(BIDSIGNORE[name])
        sim = t / "derivatives" / "simulation"
        _write_tsv(sim / "subject_truth.tsv", self.truth)
        _write_json(sim / "subject_truth.json", TRUTH_COLUMNS)
        effects = {
            "simulation": True,
            "generator": GENERATOR,
            "version": ssl_pretrain.__version__,
            "settings": asdict(s),
            "seed": s.seed,
            "spacing_mm": s.spacing,
            "dwi_spacing_mm": s.dwi_spacing,
            "atrophy_regions": ["pons", "medulla"],
            "expected_group_difference": expected,
            "expected_brainstem_volume_diff_pct": expected["brainstem_volume_diff_pct"],
            "provenance": provenance,
        }
        _write_json(sim / "effects.json", effects)
        self._swap_in()

    def _swap_in(self) -> None:
        old = None
        if self.root.exists():
            old = self.root.parent / f".{self.root.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.root, old)
        os.replace(self.tmp, self.root)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


TRUTH_COLUMNS = {
    "participant_id": "BIDS participant id",
    "group": "HC or ALS",
    "atrophy_factor": "configured lower-brainstem (pons + medulla) volume loss applied to this subject (fraction)",
    "lower_brainstem_volume_loss": "realised loss: 1 - (pons + medulla volume) / (same without atrophy)",
    "cst_fa_scale": "factor on corticospinal-tract white-matter FA (1 for controls)",
    "head_scale": "linear head-size factor relative to the template",
    "brainstem_volume_mm3": "midbrain + pons + medulla volume (partial-volume sum, mm^3)",
    "lower_brainstem_volume_healthy_mm3": "pons + medulla volume of the same subject without atrophy",
    "brainstem_gm_volume_mm3": "grey matter inside the brainstem (mm^3)",
    "brainstem_wm_volume_mm3": "white matter inside the brainstem (mm^3)",
    "gm_volume_mm3": "whole-brain grey matter (mm^3)",
    "wm_volume_mm3": "whole-brain white matter (mm^3)",
    "csf_volume_mm3": "whole-brain CSF (mm^3)",
    **truth.COLUMNS,
    "cst_fa_mean": "noise-free FA in corticospinal-tract white matter at anatomical resolution",
    "*_t1_ms, *_t2_ms, *_pd": "tissue relaxation times (ms) and proton density used for this subject",
    "t1w_tr_ms, t1w_te_ms, t2w_tr_ms, t2w_te_ms": "sequence timings (ms)",
    "fa_*, md_*": "tissue FA and MD (mm^2/s) used for this subject",
    "dwi_rotation_deg, dwi_translation_mm": "misregistration of the diffusion grid (x y z)",
    "t1w_artefact, t2w_artefact": "none, motion or ghosting",
    "t1w_noise_rel, t2w_noise_rel": "Rician noise sigma relative to the WM signal",
}
