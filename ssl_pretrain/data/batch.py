"""The batch contract between the data layer and every model.

Batches are dicts collated by torch's default collate, with these keys:

``image``      ``(B, C, X, Y, Z)`` float32: normalised intensities, channels in ``data.modalities`` order;
               a missing or dropped modality is all zeros.
``presence``   ``(B, C)`` float32: 1 = the modality is present in this sample (neither missing nor dropped).
``tissue``     ``(B, 1, X, Y, Z)`` int64: tissue classes 0 bg, 1 CSF, 2 GM, 3 WM; ``IGNORE_INDEX`` where
               the subject has no tissue labels.
``regions``    ``(B, 1, X, Y, Z)`` int64: canonical region indices (:mod:`ssl_pretrain.data.labels`), 0 = none.
``subject``    list of record keys (``sub-XX[_ses-YY]``).
``group``      list of participant groups (``""`` when unknown).

Two-view samplers (contrastive methods) add ``image_b`` and ``presence_b``: a second augmented crop
of the same subject that overlaps the first.
"""

IMAGE = "image"
PRESENCE = "presence"
TISSUE = "tissue"
REGIONS = "regions"
SUBJECT = "subject"
GROUP = "group"
IMAGE_B = "image_b"
PRESENCE_B = "presence_b"

IGNORE_INDEX = -1  # tissue value where no label is known
