"""Classical GMM and HMRF tissue classifiers on the synthetic phantom."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.baselines import gmm_segment, hmrf_segment
from evaluation.metrics import dice
from ssl_pretrain.errors import DataError
from tests.synthetic import MEANS, synthetic_labels

SHAPE = (28, 32, 28)


@pytest.fixture(scope="module")
def phantom():
    """Multimodal synthetic brain with Gaussian noise of 12% of each modality's range (hard for T1w alone)."""
    tissue, _ = synthetic_labels(SHAPE)
    rng = np.random.default_rng(0)
    image = np.stack(
        [np.asarray(m, np.float32)[tissue] + rng.normal(0, 0.12 * max(m), SHAPE) * (tissue > 0) for m in MEANS.values()]
    )
    return image.astype(np.float32), tissue


def test_gmm_multimodal(phantom):
    image, tissue = phantom
    labels = gmm_segment(image, tissue > 0, seed=0)
    d = dice(labels, tissue, [1, 2, 3], roi=tissue > 0)
    assert d[2] > 0.95 and d[3] > 0.95 and d[1] > 0.9  # components named CSF/GM/WM correctly
    assert labels.dtype == np.int16 and (labels[tissue == 0] == 0).all()


def test_gmm_t1_only_and_missing_modality(phantom):
    image, tissue = phantom
    t1_only = gmm_segment(image[:1], tissue > 0)
    d = dice(t1_only, tissue, [2, 3], roi=tissue > 0)
    assert d[2] > 0.8 and d[3] > 0.8
    with_zero = image.copy()
    with_zero[1] = 0.0  # a missing T2w is a zero channel: left out, not a failure
    d_zero = dice(gmm_segment(with_zero, tissue > 0), tissue, [2, 3], roi=tissue > 0)
    assert d_zero[2] > 0.9 and d_zero[3] > 0.9


def test_hmrf_t1(phantom):
    image, tissue = phantom
    labels = hmrf_segment(image[0], tissue > 0, beta=0.1)
    d = dice(labels, tissue, [1, 2, 3], roi=tissue > 0)
    assert d[2] > 0.8 and d[3] > 0.8 and d[1] > 0.8
    assert (labels[tissue == 0] == 0).all() and set(np.unique(labels[tissue > 0])) <= {1, 2, 3}
    # the spatial prior is what the HMRF adds: on noisy T1w it beats the intensity-only mixture
    gmm = dice(gmm_segment(image[:1], tissue > 0), tissue, [2], roi=tissue > 0)
    assert d[2] > gmm[2]


def test_baselines_reject_bad_input(phantom):
    image, tissue = phantom
    with pytest.raises(DataError, match=r"sub-03.*empty"):
        gmm_segment(image, np.zeros(SHAPE, bool), source="sub-03")
    with pytest.raises(DataError, match="does not match"):
        hmrf_segment(image[0], np.ones((4, 4, 4), bool))
    bad = image.copy()
    bad[0, 14, 16, 14] = np.nan
    with pytest.raises(DataError, match="NaN"):
        gmm_segment(bad, tissue > 0)
    with pytest.raises(DataError, match="NaN"):
        hmrf_segment(bad[0], tissue > 0)
    with pytest.raises(DataError, match="constant"):
        gmm_segment(np.zeros_like(image), tissue > 0)
