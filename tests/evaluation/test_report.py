"""report.html builds from a small results dict with every section, verdict and embedded figure."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import numpy as np
import pandas as pd

from evaluation.figures import figures_from_results, group_png, overlay_png
from evaluation.report import build_report
from tests.synthetic import synthetic_labels

SECTIONS = [
    "best-per-k",
    "learning-curves",
    "comparisons",
    "compute",
    "segmentation",
    "transfer",
    "similarity",
    "group",
    "overlays",
    "what-was-run",
    "reading-notes",
]


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.imgs, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if "id" in a:
            self.ids.append(a["id"])
        if tag == "img":
            self.imgs.append(a["src"])


def _figures(results):
    figs = figures_from_results(results)
    table = pd.DataFrame({"group": ["HC"] * 4 + ["ALS"] * 4, "brainstem_volume": np.arange(8.0)})
    figs["group_volumes"] = group_png(table, ["brainstem_volume"])
    tissue, _ = synthetic_labels((16, 20, 16))
    figs["overlay_brainstem"] = overlay_png(tissue * 1.0, tissue, [(2, 5)])
    return figs


def test_report_has_every_section_and_embedded_figure(tmp_path, small_results):
    results = small_results
    figs = _figures(results)
    path = build_report(results, figs, tmp_path / "eval", captions={"overlay_brainstem": "Subject sub-01 at k=2."})
    assert path == tmp_path / "eval" / "report.html"
    text = path.read_text()
    parser = _Collector()
    parser.feed(text)
    assert [i for i in parser.ids if i in SECTIONS] == SECTIONS
    assert "simulated-banner" in parser.ids
    assert len(parser.imgs) == len(figs) == 5
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in parser.imgs}
    assert all(src.startswith("data:image/png;base64,") for src in parser.imgs)
    assert embedded == set(figs.values())
    for key in figs:
        assert f'id="fig-{key}"' in text
    assert "Subject sub-01 at k=2. Run: preset=quick; seeds=[0, 1, 2]; data.root=data/demo." in text
    assert "Made from: 2 initialisations (ssl_mae, scratch) × k ∈ {2, all} × 3 seeds." in text
    assert "script" not in parser.tags and "link" not in parser.tags and "http" not in text.lower()
    # numbers with their CIs and the baselines beside the deep model
    assert "0.740 [0.710, 0.770]" in text and "hmrf (classical)" in text and "-7.6 [-10.1, -5.0]" in text
    assert "<b>ssl_mae</b>" in text  # best initialisation at k=2, from learning curves and comparisons


def test_report_without_simulation_or_optional_sections(tmp_path):
    results = {"config": {"seeds": [0]}, "dataset": {"simulated": False}}
    text = build_report(results, {}, tmp_path).read_text()
    parser = _Collector()
    parser.feed(text)
    assert "simulated-banner" not in parser.ids and not parser.imgs
    assert [i for i in parser.ids if i in SECTIONS] == SECTIONS  # every section, saying what was not run
    assert text.count("Not part of this evaluation") >= 8


def test_best_per_k_verdicts(tmp_path, small_results):
    text = build_report(small_results, {}, tmp_path).read_text()
    assert "0.060 [0.030, 0.090] above scratch (p Holm 0.004): a difference these data support." in text
    assert "0.020 [-0.010, 0.050] above scratch (p Holm 0.200): not a difference these data can confirm." in text
    results = dict(small_results)
    results["best_per_k"] = [{"k": 2, "best": "ssl_mae", "dice_mean": 0.7, "compute_seconds": 4100.0}]
    text = build_report(results, {}, tmp_path).read_text()
    assert "compute of best" in text and "<td>1 h 08 min</td>" in text and "It cost 1 h 08 min of compute." in text


def test_rich_report_answers_best_init_per_k_with_costs(tmp_path, rich_results):
    text = build_report(rich_results, {}, tmp_path).read_text()
    # k=1: the best init, its margin over the runner-up and over scratch, the Holm p and its compute
    best = rich_results["best_per_k"][0]
    assert best["best"] == "ssl_mae+subcortical" and best["runner_up"] == "ssl_mae"
    assert best["vs_reference"]["init"] == "scratch" and best["vs_reference"]["delta"] > best["delta"] > 0
    assert f"k = 1: <b>ssl_mae+subcortical</b> reaches Dice {best['dice_mean']:.3f}" in text
    assert f"above scratch (p Holm {best['vs_reference']['p_holm']:.3f}). It cost 1 h 21 min of compute." in text
    # 15 comparisons over 8 subjects: the smallest exact Wilcoxon p is 2/2^8, Holm multiplies it by 15
    assert "all m = 15 comparisons" in text and "no corrected p can fall below 0.117" in text
    # compute per init, by stage
    assert "<td>ssl_mae+subcortical</td><td><b>1 h 21 min</b></td><td>17</td>" in text
    assert "<td>6 min 40 s</td>" in text
    # group: the in_model_roi note, the excluded measure with its reason, and the means in mm³
    assert "in_model_roi" in text and "<b>subcortical_GM</b>: GM in subcortical is outside the region" in text
    assert "<td>28100 / 25964</td>" in text and "mean HC / ALS (mm³)" in text
    # the outlines: region Dice of the written maps, whole volume, with the post-processing named
    assert "<td>brainstem</td><td>8</td><td>0.884 [0.870, 0.900]</td><td>27600</td><td>27000</td><td>yes</td>" in text
    assert "<td>8400</td><td>no: extrapolated</td>" in text  # a region the model's last stage never trained
    assert "largest connected piece kept for brainstem" in text
    assert "<td>bootstrap.n</td><td>2000</td>" in text


def test_holm_note_follows_the_family(tmp_path, rich_results):
    from evaluation.learning_curves import comparisons
    from tests.evaluation.conftest import sweep_rows

    results = dict(rich_results, comparisons=comparisons(sweep_rows(), n_boot=100, holm_family="k"))
    text = build_report(results, {}, tmp_path).read_text()
    assert "up to m = 3 comparisons at the same k" in text and "below 0.023 here." in text
    assert "more test subjects are needed" not in text


def test_pretraining_evidence_is_collected_and_shown(tmp_path):
    import json

    from evaluation.report import render_html
    from evaluation.runs import Run
    from evaluation.sections.pretraining import collect_evidence

    evidence = {"probes": {"status": "done", "regions": {"brainstem": {"n_val_subjects": 3, "inputs": {"T1w": {
        "pretrained": {"mean": 0.81, "ci95": [0.7, 0.9]}, "random": {"mean": 0.72}, "gap": {"mean": 0.09}}}}}},
        "reconstruction": {"modalities": {"T2w": {"mse": 0.03, "mean_predictor_mse": 0.05, "skill": 0.4}}}}  # fmt: skip
    (tmp_path / "embedding_quality.json").write_text(json.dumps(evidence))
    found = collect_evidence([Run(path=tmp_path, kind="pretrain", label="ssl_mae")])
    html = render_html({"pretraining_evidence": found}, {})
    assert "What pretraining learned" in html and "0.810" in html and "0.090" in html and "0.400" in html
