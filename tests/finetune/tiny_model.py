"""The tiny network configuration the fine-tuning tests build (a 2-level U-Net, 4 and 8 channels)."""

from __future__ import annotations

TINY: dict[str, object] = {
    "spatial_dims": 3,
    "channels": [4, 8],
    "strides": [1, 2],
    "num_res_units": 1,
    "subunits": 1,
    "decoder_res_units": 1,
    "kernel_size": 3,
    "norm": "instance",
    "act": "prelu",
    "dropout": 0.0,
    "upsample": "deconv",
}
