"""``bssl evaluate`` end to end over real pretrain → finetune → predict runs on the tiny demo cohort."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from evaluation import evaluate
from finetune import predict, train
from ssl_pretrain import pretrain
from ssl_pretrain.config import compose_config

TINY = [
    "model.channels=[8,16]",
    "model.strides=[1,2]",
    "model.num_res_units=1",
    "model.subunits=1",
    "data.patch_size=16",
    "data.batch_size=2",
    "data.patches_per_epoch=4",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
]


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def handle_starttag(self, tag, attrs):
        if tag == "img" and dict(attrs).get("src", "").startswith("data:image/png;base64,"):
            self.images += 1


@pytest.mark.slow
def test_evaluate_over_a_chain_of_runs(tmp_path, demo_cohort):
    base = [f"data.root={demo_cohort}", f"paths.cache_dir={tmp_path / 'cache'}", f"paths.runs_dir={tmp_path}"]
    runs = tmp_path / "runs"
    pre = pretrain.run(
        compose_config("pretrain", [*base, *TINY, "method=mae", "method.mask_block=4"], output_dir=runs / "pre")
    )
    ft = [*base, *TINY, "eval.hd95=false", "eval.n_overlays=1", "inference.overlap=0.0"]
    sub = train.run(compose_config("finetune", [*ft, "stage=subcortical", f"init={pre}"], output_dir=runs / "sub"))
    stem = train.run(
        compose_config("finetune", [*ft, "stage=brainstem", "labels.k=all", f"init={sub}"], output_dir=runs / "stem")
    )
    predict.run(compose_config("predict", [*base, f"predict.model={stem}"], output_dir=runs / "pred"))
    cfg = compose_config(
        "evaluate",
        [
            *base,
            f"runs=[{runs}]",
            "bootstrap.n=200",
            "probe.voxels_per_subject=40",
            "probe.n_null=10",
            "probe.regions=[subcortical,brainstem]",
            "baselines.methods=[gmm]",
        ],
        output_dir=tmp_path / "eval",
    )
    out = evaluate.run(cfg)

    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["simulated"] is True
    assert set(results["segmentation"]) == {"subcortical", "brainstem"}
    assert {e["init"] for e in results["learning_curves"]} == {"ssl_mae+subcortical"}
    assert set(results["transfer_matrix"]) == {"random_init", "ssl_mae", "ssl_mae+subcortical"}
    for matrix in results["transfer_matrix"].values():
        for row in matrix.values():
            assert all(0.0 <= v <= 1.0 for v in row.values())
    assert "gmm" in results["baselines"]
    # one model predicted every subject, some of which it trained on: those never count, and with the controls
    # gone nothing is compared (the group analysis says to cross-fit; bssl study does)
    assert results["group_left_out"] and results["group_analysis"] == []
    assert all("cross-fit" in e["reason"] for e in results["group_excluded"])
    assert set(results["compute"]) and all(v["seconds"] is not None for v in results["compute"].values())
    # compute of the init = pretraining + subcortical + brainstem run, from their run.json
    cost = results["compute_per_init"]["ssl_mae+subcortical"]
    assert cost["runs"] == 3 and set(cost["by_stage"]) == {"pretrain", "subcortical", "brainstem"}
    seconds = {k.split("/")[0] + "/" + k.split("/")[-1]: v["seconds"] for k, v in results["compute"].items()}
    assert cost["seconds"] == pytest.approx(
        seconds["pretrain/pre"] + seconds["finetune/sub"] + seconds["finetune/stem"]
    )
    assert results["best_per_k"][0]["compute_seconds"] == pytest.approx(cost["seconds"])
    parser = _Images()
    parser.feed((out / "report.html").read_text())
    assert parser.images >= 4  # transfer matrix, CKA, shift, learning curves, group plot, overlays
