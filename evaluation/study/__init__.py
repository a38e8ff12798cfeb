"""``bssl study``: the orchestration that runs a whole transfer study and ends in :mod:`evaluation`'s report.

It sits downstream of everything it runs: it imports the command modules (through
:data:`ssl_pretrain.commands.COMMANDS`), the evaluation's protocol check and report helpers, and nothing in
:mod:`evaluation`, :mod:`finetune` or :mod:`ssl_pretrain` imports it.

- :mod:`evaluation.study.command`: the command's ``run(cfg)``: the study, or its plan (``study.plan_only``).
- :mod:`evaluation.study.chain`: which stages a study config asks for (:class:`~evaluation.study.chain.Study`)
  and running them, from the demo cohort to the evaluation.
- :mod:`evaluation.study.hypotheses`: the hypotheses (``configs/hypothesis/*.yaml``) as data.
- :mod:`evaluation.study.stages`: one stage: its composed config, content hash, lock, reuse and resume.
- :mod:`evaluation.study.launch`: where stages run: inline, or submitit jobs (local processes or SLURM).
- :mod:`evaluation.study.plan`: ``study.plan_only=true``: the stages, their steps and device-hours.
- :mod:`evaluation.study.sweep`: one report over a Hydra multirun of studies (``make study-sweep``).
"""
