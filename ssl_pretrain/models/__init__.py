"""3D networks (residual U-Net encoder/decoder from MONAI blocks) and their weight files.

- :mod:`ssl_pretrain.models.unet`: :class:`ResEncoder`, :class:`UNetDecoder`, :class:`UNet`,
  :func:`build_encoder`, :func:`build_unet` (from a ``model`` config).
- :mod:`ssl_pretrain.models.checkpoint`: :func:`save_weights`, :func:`load_weights` (``weights_only=True``,
  input channels adapted by modality name), :func:`read_sidecar`.
- :mod:`ssl_pretrain.models.features`: a frozen encoder's multi-scale features at voxels (probes in
  :mod:`ssl_pretrain.evidence` and :mod:`evaluation`).
- :mod:`ssl_pretrain.models.sparse`: SparK-style sparse encoding of masked inputs (``method.sparse_norm``).
"""

from ssl_pretrain.models.checkpoint import LoadReport, load_weights, read_sidecar, save_weights
from ssl_pretrain.models.unet import ResEncoder, UNet, UNetDecoder, build_encoder, build_unet

__all__ = [
    "LoadReport",
    "ResEncoder",
    "UNet",
    "UNetDecoder",
    "build_encoder",
    "build_unet",
    "load_weights",
    "read_sidecar",
    "save_weights",
]
