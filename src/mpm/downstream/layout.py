"""Where the downstream runs of params `finetune.grid` live: their sizes and folder names, for
the stages that write them and those that read them (no torch here)."""

from pathlib import Path


def grid_sizes(grid: dict, task: str, mode: str) -> list[int]:
    """The sizes of `task`'s runs in `mode` in params `finetune.grid`: training jets, or for
    CWoLa the injected signal jets; fine-tuned runs at `finetuned_sizes` where that names
    some (a subset: they cost the most)."""
    sizes = grid["cwola_signal"] if task == "cwola" else grid["sizes"][task]
    subset = grid["finetuned_sizes"][task] if mode == "finetuned" else None
    return sizes if subset is None else [size for size in sizes if size in subset]


def run_name(mode: str, size: int, seed: int) -> str:
    """A run's folder in its task's and backbone's stage output."""
    return f"{mode}-{size}-s{seed}"


def cwola_dataset(root: Path, n_signal: int, seed: int) -> Path:
    """The folder the `cwola_data` stage writes for `n_signal` injected top jets and `seed`."""
    return root / f"{n_signal}-s{seed}"
