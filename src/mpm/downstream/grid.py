"""A backbone's downstream runs on one task: every mode, training-set size and seed of params
`finetune.grid`, in one process (a run costs seconds; starting a process for each would cost
more than the run). Frozen runs train their heads on the backbone's outputs stored once for
all of them (mpm.downstream.embeddings) where those fit in memory, else on the backbone run
at every step."""

import copy
import logging
import time
from pathlib import Path

from tqdm import tqdm

from mpm.atomic import atomic_dir
from mpm.downstream.layout import cwola_dataset, grid_sizes, run_name
from mpm.downstream.run import frozen_backbone, train_and_test, with_backbone, write_run
from mpm.models.backbone import load_backbone

log = logging.getLogger(__name__)


def run_grid(task: str, backbone: Path, params: dict, data: Path, preprocessor: Path,
             out_dir: Path) -> list[dict]:  # fmt: skip
    """Every run of `backbone` on `task` in params `finetune.grid`; writes each run's
    `metrics.json` and `predictions.csv` to `out_dir/<mode>-<size>-s<seed>/` (all of them or,
    if one fails, none). `data`: the task's dataset folder (CWoLa: the folder of its datasets,
    one per size and seed)."""
    grid = params["finetune"]["grid"]
    seeds = grid["seeds"]
    runs = [(mode, size, seed) for mode in grid["modes"]
            for size in grid_sizes(grid, task, mode) for seed in seeds]  # fmt: skip
    summaries = []
    recipe = params["finetune"]["recipe"]
    loaded, info = load_backbone(backbone)
    with atomic_dir(out_dir) as tmp, tqdm(total=len(runs), desc=f"{task} {backbone.stem}",
                                          unit="run") as bar:  # fmt: skip
        frozen = None
        for mode, size, seed in runs:
            tic = time.perf_counter()
            n_train = size if task != "cwola" else None  # CWoLa trains on every mixed jet
            folder = cwola_dataset(data, size, seed) if task == "cwola" else data
            if mode == "frozen":
                if frozen is None or task == "cwola":  # CWoLa: each dataset its own jets
                    frozen = frozen_backbone(
                        copy.deepcopy(loaded), folder, preprocessor, recipe,
                        [n_train] if task == "cwola" else grid_sizes(grid, task, mode),
                        [seed] if task == "cwola" else seeds, params["seed"])  # fmt: skip
                encoder = frozen
            else:
                encoder = copy.deepcopy(loaded)  # afresh: a fine-tuned run changes it
            summary, table = train_and_test(task, encoder, mode, n_train, seed, params, folder,
                                            preprocessor)  # fmt: skip
            summary = with_backbone(summary, info, backbone, tic)
            write_run(tmp / run_name(mode, size, seed), summary, table)
            summaries.append(summary)
            bar.update()
    return summaries
