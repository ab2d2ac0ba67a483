"""A backbone's downstream runs on one or more tasks: every mode, training-set size and seed
of params `finetune.grid`, in one process (a run costs seconds; starting a process for each
would cost more than the run). Frozen runs train their heads on the backbone's outputs stored
once (mpm.downstream.embeddings) where those fit in memory, else on the backbone run at every
step: once for all the tasks read from one dataset (BTag's jet, vertex and track tasks), and
the test split once for all the CWoLa datasets, which share their test file."""

import contextlib
import copy
import logging
import time
from pathlib import Path

from tqdm import tqdm

from mpm.atomic import atomic_dir
from mpm.data.h5io import CONTENT_DIGEST, open_jets
from mpm.downstream.embeddings import StoredEncoder
from mpm.downstream.layout import cwola_dataset, grid_sizes, run_name
from mpm.downstream.run import frozen_backbone, train_and_test, with_backbone, write_run
from mpm.models.backbone import load_backbone

log = logging.getLogger(__name__)


def _digest(path: Path) -> str | None:
    """The content digest a file's writer recorded (None: none recorded)."""
    with open_jets(path) as file:
        return file.attrs.get(CONTENT_DIGEST)


class _FrozenOutputs:
    """The frozen backbone of a stage's frozen runs, stored per dataset folder: on a dataset
    first read, the outputs for every frozen run of the stage's tasks on it; a test file
    whose content equals the last one stored is not stored again."""

    def __init__(self, backbone, preprocessor: Path, recipe: dict, seed: int):
        self.backbone, self.preprocessor, self.recipe, self.seed = (backbone, preprocessor,
                                                                    recipe, seed)  # fmt: skip
        self.folder, self.encoder = None, None
        self.test_digest, self.test_outputs = None, None

    def on(self, folder: Path, sizes: list[int | None], seeds: list[int]):
        if folder == self.folder:
            return self.encoder
        digest = _digest(folder / "test.h5")
        known = ({"test": self.test_outputs}
                 if digest is not None and digest == self.test_digest else None)  # fmt: skip
        self.folder = folder
        self.encoder = frozen_backbone(copy.deepcopy(self.backbone), folder, self.preprocessor,
                                       self.recipe, sizes, seeds, self.seed, known)  # fmt: skip
        if isinstance(self.encoder, StoredEncoder):
            self.test_digest, self.test_outputs = digest, self.encoder.outputs["test"]
        return self.encoder


def run_grid(tasks: list[str], backbone: Path, params: dict, data: Path, preprocessor: Path,
             out_dirs: list[Path]) -> list[dict]:  # fmt: skip
    """Every run of `backbone` on each of `tasks` in params `finetune.grid`; writes each run's
    `metrics.json` and `predictions.csv` to `<its task's out_dir>/<mode>-<size>-s<seed>/` (all
    of them or, if one fails, none). `data`: the tasks' dataset folder (CWoLa: the folder of
    its datasets, one per size and seed)."""
    grid = params["finetune"]["grid"]
    seeds = grid["seeds"]
    runs = [(task, mode, size, seed) for task in tasks for mode in grid["modes"]
            for size in grid_sizes(grid, task, mode) for seed in seeds]  # fmt: skip
    # every frozen training-set size that the tasks read from `data`, stored at once
    frozen_sizes = sorted({size for task in tasks if task != "cwola"
                           for size in grid_sizes(grid, task, "frozen")})  # fmt: skip
    loaded, info = load_backbone(backbone)
    frozen = _FrozenOutputs(loaded, preprocessor, params["finetune"]["recipe"], params["seed"])
    summaries = []
    with contextlib.ExitStack() as stack:
        tmp = {task: stack.enter_context(atomic_dir(out)) for task, out in zip(tasks, out_dirs)}
        bar = stack.enter_context(tqdm(total=len(runs), desc=f"{'+'.join(tasks)} {backbone.stem}",
                                       unit="run"))  # fmt: skip
        for task, mode, size, seed in runs:
            tic = time.perf_counter()
            n_train = size if task != "cwola" else None  # CWoLa trains on every mixed jet
            folder = cwola_dataset(data, size, seed) if task == "cwola" else data
            if mode == "frozen":  # CWoLa: each dataset its own training jets
                encoder = (frozen.on(folder, [None], [seed]) if task == "cwola"
                           else frozen.on(folder, frozen_sizes, seeds))  # fmt: skip
            else:
                encoder = copy.deepcopy(loaded)  # afresh: a fine-tuned run changes it
            summary, table = train_and_test(task, encoder, mode, n_train, seed, params, folder,
                                            preprocessor)  # fmt: skip
            summary = with_backbone(summary, info, backbone, tic)
            write_run(tmp[task] / run_name(mode, size, seed), summary, table)
            summaries.append(summary)
            bar.update()
    return summaries
