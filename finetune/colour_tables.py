"""Colour tables that make a label map open with its names and colours in FSLeyes and ITK-SNAP.

- FSLeyes lookup table (``.lut``; FSLeyes user guide, "Lookup tables"): one line per label,
  ``<value> <r> <g> <b> <name>`` with colour components in 0..1. Open with
  ``fsleyes T1w.nii.gz dseg.nii.gz -ot label -l tissue_fsleyes.lut``.
- ITK-SNAP label description file (the format ITK-SNAP's *Segmentation > Export label descriptions*
  writes): ``IDX R G B A VIS MSH "LABEL"`` with colours in 0..255, opacity 0..1, visibility flags. Open with
  ``itksnap -g T1w.nii.gz -s dseg.nii.gz -l tissue_itksnap.txt``.

Neither file is a BIDS file: the derivative's ``.bidsignore`` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ssl_pretrain.data.labels import hex_to_rgb

ITKSNAP_HEADER = """\
################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
#    -R-:   Red color component (0..255)
#    -G-:   Green color component (0..255)
#    -B-:   Blue color component (0..255)
#    -A-:   Label transparency (0.00 .. 1.00)
#    VIS:   Label visibility (0 or 1)
#    MSH:   Label mesh visibility (0 or 1)
#  LABEL:   Label description
################################################
"""


def fsleyes_lut(names: Mapping[int, str], colours: Mapping[int, str]) -> str:
    """An FSLeyes ``.lut`` for labels ``names`` (value -> name) drawn in ``colours`` (value -> ``#rrggbb``).

    Background (0) is left out: FSLeyes draws values without an entry transparent.
    """
    lines = []
    for value in sorted(v for v in names if v != 0):
        r, g, b = (c / 255 for c in hex_to_rgb(colours[value]))
        lines.append(f"{value} {r:.4f} {g:.4f} {b:.4f} {names[value]}")
    return "\n".join(lines) + "\n"


def itksnap_labels(names: Mapping[int, str], colours: Mapping[int, str]) -> str:
    """An ITK-SNAP label description file for ``names`` in ``colours`` (background 0 clear and hidden)."""
    lines = [ITKSNAP_HEADER.rstrip("\n")]
    for value in sorted(names):
        r, g, b = hex_to_rgb(colours[value])
        visible = 0 if value == 0 else 1
        name = "Clear Label" if value == 0 else names[value].replace('"', "'")
        lines.append(f'{value:5d} {r:5d} {g:4d} {b:4d} {float(visible):8.2f} {visible:2d} {visible:2d}    "{name}"')
    return "\n".join(lines) + "\n"
