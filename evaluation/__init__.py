"""Evaluation: how well representations transfer between brain regions, and what the segmentations say.

Modules (import what you need; nothing heavy is imported here):

- :mod:`evaluation.metrics`: Dice, HD95 and class volumes inside an ROI (:mod:`finetune.metrics`, re-exported).
- :mod:`evaluation.statistics`: bootstrap CIs, Holm correction, paired Wilcoxon, Cohen's d.
- :mod:`ssl_pretrain.models.features`: frozen-encoder features at sampled voxels (:class:`RegionFeatures`).
- :mod:`evaluation.probes`: linear / kNN probes and the region-to-region transfer matrix.
- :mod:`evaluation.similarity`: linear CKA (paired rows), domain shift and MMD (between regions).
- :mod:`evaluation.baselines`: classical GMM and HMRF tissue classifiers.
- :mod:`evaluation.learning_curves`: label-efficiency curves, paired comparisons, segmentation summaries.
- :mod:`evaluation.group_analysis`: patients versus controls.
- :mod:`evaluation.results_file`: ``results.json`` (strict JSON, atomic writes).
- :mod:`evaluation.compute_cost`: wall-clock compute of each initialisation's chain of runs.
- :mod:`evaluation.figures`, :mod:`evaluation.report`: PNG figures and the self-contained ``report.html``
  (:mod:`evaluation.captions`, :mod:`evaluation.report_html`).
- :mod:`evaluation.sections`: the report's sections, one file each (what it adds to ``results.json``, its
  figures, captions and HTML), listed in ``report.sections`` of ``configs/evaluate.yaml``.
- :mod:`evaluation.protocol`: what the arms of one comparison may differ in (checked before a study trains
  and again on the evaluated runs).
- :mod:`evaluation.study`: ``bssl study``, the orchestration that runs every stage of a study and ends in this
  package's evaluation; it imports the evaluation, nothing here imports it.
"""
