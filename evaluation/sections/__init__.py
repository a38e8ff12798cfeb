"""The sections of ``report.html``, one file each: what a section computes from the runs into ``results.json``
(keyed by the section's id), its figures, their captions and its HTML.

- :mod:`evaluation.sections.base`: :class:`Section` (what a section is) and :class:`Context` (what it computes
  from).
- :mod:`evaluation.sections.instantiate`: the sections ``report.sections`` lists in ``configs/evaluate.yaml``
  (names of ``configs/report/section/*.yaml`` or inline ``_target_`` configs).

A new section is one file here (a :class:`Section` subclass), one line in ``report.sections`` (with its
two-line ``configs/report/section/<id>.yaml``, or an inline ``{_target_: …}``) and one test.
"""
