"""``metrics.jsonl``: the training log (one JSON line per logged step or validation), and TensorBoard."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sml.utils import atomic


class MetricsLog:
    """``metrics.jsonl``: one JSON line per logged step, rewritten atomically; TensorBoard when installed."""

    def __init__(self, out_dir: Path, start: int) -> None:
        self.path = out_dir / "metrics.jsonl"
        self.rows: list[dict[str, Any]] = []
        if start > 0 and self.path.is_file():   # keep the history up to the resume point only
            for line in self.path.read_text().splitlines():
                row = json.loads(line)
                if row.get("iteration", 0) <= start:
                    self.rows.append(row)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start + 1 if start else None)
        except Exception:   # tensorboard not installed: the plain log is enough
            self.tb = None

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        atomic.write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))
        if self.tb is not None:
            for k, v in row.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, row["iteration"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
