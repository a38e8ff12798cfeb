"""The study's rule 1 as a check: arms of the target sweep differ only in their initialisation (DESIGN §10).

At one (k, seed), every arm's target-stage config must be the same except for where its weights start
(``init``, ``init_label``) and, for a compute-matched control, its number of steps. Anything else that
differs — a learning rate, a warm-up, the encoder's learning-rate scale, the augmentation, the inference,
another labelled subject — would let the budget or the protocol answer instead of the initialisation, so
the study refuses to start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ssl_pretrain.errors import ConfigError

WHERE_WEIGHTS_START = ("init", "init_label")
NOT_PART_OF_THE_PROTOCOL = ("paths", "resume")
STEPS = "trainer.max_steps"
MATCHED = "compute_matched"  # the flag a compute-matched control carries


def flat(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A config as ``{"dotted.key": value}`` (lists kept whole)."""
    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node

    walk(container, "")
    return out


def differences(a: Mapping[str, Any], b: Mapping[str, Any], allowed: Iterable[str] = ()) -> list[str]:
    """Dotted keys whose values differ between two flat configs, except ``allowed`` keys and their children."""
    skip = (*WHERE_WEIGHTS_START, *NOT_PART_OF_THE_PROTOCOL, *allowed)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if not any(k == s or k.startswith(f"{s}.") for s in skip) and a.get(k) != b.get(k)]


def check_arms(arms: Sequence[tuple[str, DictConfig, bool]], where: str) -> None:
    """Refuse target-stage configs of one (k, seed) that differ in more than their initialisation.

    Args:
        arms: ``(hypothesis name, composed target-stage config, is a compute-matched control)``.
        where: what the group is (e.g. ``k=2, seed 0``), for the message.

    Raises:
        ConfigError: naming the arms and the first keys in which they differ.
    """
    if len(arms) < 2:
        return
    reference_name, reference_cfg, _ = next((a for a in arms if not a[2]), arms[0])
    reference = flat(reference_cfg)
    for name, cfg, matched in arms:
        diff = differences(reference, flat(cfg), allowed=(STEPS, MATCHED) if matched else ())
        if diff:
            shown = ", ".join(f"{k} ({reference.get(k)!r} vs {flat(cfg).get(k)!r})" for k in diff[:4])
            raise ConfigError(
                "study.overrides",
                f"arms {reference_name} and {name} at {where} differ in more than their initialisation: {shown}; "
                "every arm must share one target schedule (DESIGN §10 rule 1)",
            )
