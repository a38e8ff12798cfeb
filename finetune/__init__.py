"""Supervised stages and inference: ``bssl finetune`` (stage=subcortical | brainstem) and ``bssl predict``.

- :mod:`finetune.train`: ``run(cfg)`` of ``bssl finetune`` (one stage: k labelled subjects, init, policy);
- :mod:`finetune.predict`: ``run(cfg)`` of ``bssl predict`` (BIDS-derivative dseg in native space, volumes);
- :mod:`finetune.roi_loss` (ROI-masked Dice+CE), :mod:`finetune.roi` (stage ROI with margin),
  :mod:`finetune.selection` (``labels.k``), :mod:`finetune.policy` and :mod:`finetune.linear_head`
  (full | frozen_encoder | linear), :mod:`finetune.initialisation` (``init=scratch | PATH``),
  :mod:`finetune.module` (the LightningModule), :mod:`finetune.inference` (sliding window),
  :mod:`finetune.metrics` (Dice/HD95/volumes in the ROI), :mod:`finetune.scoring` (test subjects),
  :mod:`finetune.bids_output` (derivative writer, volume table), :mod:`finetune.figures` (overlays).

Imports flow ``evaluation -> finetune -> ssl_pretrain``; nothing here imports ``evaluation``.
"""
