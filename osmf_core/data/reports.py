"""Machine-readable results: every job writes its figures as one indented JSON file under reports/."""
from __future__ import annotations

import json
from pathlib import Path


def write_report(path: str | Path, data: dict) -> Path:
    """Write `data` as indented JSON to `path` (folders created) and say where it went."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    print(f"wrote {path}")
    return path
