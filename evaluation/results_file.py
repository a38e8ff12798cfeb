"""``results.json``: the machine-readable record of one evaluation (DESIGN §9), read and written safely.

It holds the DESIGN §9 keys (``config``, ``segmentation``, ``learning_curves``, ``comparisons``,
``transfer_matrix``, ``cka``, ``baselines``, ``group_analysis``, ``compute``) plus any others the caller
adds (e.g. ``shift``, ``best_per_k``, ``dataset``). It is strict JSON: NaN and infinities are written as
``null``, numpy values as plain numbers. Writes are atomic (temporary file + rename), so an interrupted
write never leaves a truncated file in place of a good one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ssl_pretrain.errors import DataError
from ssl_pretrain.run_dir import write_json_atomic

RESULTS_FILE = "results.json"


def to_jsonable(obj: Any) -> Any:
    """``obj`` as strict-JSON data: numpy → Python, NaN/±inf → None, tuples → lists, keys → str, Path → str."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_results(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``results`` as strict JSON, atomically (temporary file + rename). Returns the path."""
    path = Path(path)
    payload = to_jsonable(results)
    json.dumps(payload, allow_nan=False)  # fail here, before anything is written, if something is not JSON
    write_json_atomic(path, payload)
    return path


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json``.

    Raises:
        DataError: the file is missing, unreadable or not a JSON object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise DataError(path, f"cannot read results file ({err.strerror or err})") from None
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict):
        raise DataError(path, "a results file must hold a JSON object")
    return data
