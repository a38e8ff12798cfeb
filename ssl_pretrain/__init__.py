"""brainstem-ssl: self-supervised pretraining on 3D brain MRI and region-transfer measurement.

Shared foundations (data layer, networks, checkpoints) live here because every downstream stage
(``finetune``, ``evaluation``) starts from a pretrained encoder. Imports flow one way:
``evaluation -> finetune -> ssl_pretrain``.
"""

__version__ = "0.1.0"
