"""What a synthetic run is, and the name of its file. No numpy or pyarrow here: bench.py
imports this, and must stay a small process (see `run_child` in bench.py)."""

from __future__ import annotations

from dataclasses import dataclass

# Bump when bench/generate.py changes, so files written by an older version are not reused.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class RunSpec:
    rows: int
    classes: int
    seed: int  # seed of the logits
    label_seed: int = 0  # seed of the labels: runs sharing it share ids and labels
    topk: int = 0  # > 0: a top-k run listing this many of `classes` (a vocabulary) per row

    def file_name(self) -> str:
        # Every parameter is in the name: a file is reused only if it was made the same way.
        listed = f"_top{self.topk}" if self.topk else ""
        return (f"run_n{self.rows}_k{self.classes}{listed}_seed{self.seed}"
                f"_labels{self.label_seed}_v{GENERATOR_VERSION}.parquet")
