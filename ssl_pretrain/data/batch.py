"""The batch contract between the data layer and every model.

Batches are dicts collated by torch's default collate, with these keys:

``image``      ``(B, C, X, Y, Z)`` float32: normalised intensities, channels in ``data.modalities`` order,
               after spatial and intensity augmentation; a missing or dropped modality is all zeros.
``presence``   ``(B, C)`` float32: 1 = the modality is in ``image`` (acquired and not dropped).
``acquired``   ``(B, C)`` float32: 1 = the subject has the modality (it may still be dropped from ``image``).
``tissue``     ``(B, 1, X, Y, Z)`` int64: tissue classes 0 bg, 1 CSF, 2 GM, 3 WM; ``IGNORE_INDEX`` where
               the subject has no tissue labels.
``regions``    ``(B, 1, X, Y, Z)`` int64: canonical region indices (:mod:`ssl_pretrain.data.labels`), 0 = none.
``subject``    list of record keys (``sub-XX[_ses-YY]``).
``group``      list of participant groups (``""`` when unknown).

Reconstruction targets (samplers built with ``clean_target=True``, e.g. for MAE) add

``target``     ``(B, C, X, Y, Z)`` float32: the same patch after the *spatial* augmentation only, before
               intensity augmentation and artefacts and before modality dropout: every acquired modality
               (``acquired``), zeros where a modality was not acquired.

Two-view samplers (contrastive methods) add ``image_b`` and ``presence_b``: a second crop of the same
subject whose overlap with the first is bounded, augmented independently (also by the strong per-view
intensity augmentation both views get), with its own modality subset.
"""

IMAGE = "image"
PRESENCE = "presence"
ACQUIRED = "acquired"
TARGET = "target"
TISSUE = "tissue"
REGIONS = "regions"
SUBJECT = "subject"
GROUP = "group"
IMAGE_B = "image_b"
PRESENCE_B = "presence_b"

IGNORE_INDEX = -1  # tissue value where no label is known
