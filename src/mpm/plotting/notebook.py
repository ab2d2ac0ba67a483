"""Execute a figure notebook with papermill and export it to HTML, all or nothing.

The notebook writes its figures into a temporary folder given as its `figures` parameter;
only when every cell has run are the figures, the executed notebook and its HTML export moved
to their final names, so a failing cell leaves no output behind.
"""

import logging
import os
import tempfile
from pathlib import Path

import nbformat
import papermill
from nbconvert import HTMLExporter

from mpm.atomic import atomic_file
from mpm.errors import InputError

log = logging.getLogger(__name__)
KERNEL = "python3"  # the ipykernel installed in the project's environment


def execute(
    notebook: Path, out: Path, html: Path, figures: Path, parameters: dict
) -> list[Path]:
    """Run `notebook` with `parameters` (plus `figures`), write the executed notebook to `out`
    and its HTML export to `html`, move its figures into `figures`; returns the figure paths."""
    if not notebook.is_file():
        raise InputError(f"{notebook}: notebook not found")
    figures.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=figures, prefix=".notebook-") as tmp:
        tmp = Path(tmp)
        executed = tmp / out.name
        try:
            papermill.execute_notebook(
                str(notebook), str(executed), parameters={**parameters, "figures": str(tmp)},
                kernel_name=KERNEL, cwd=str(Path.cwd()), progress_bar=False,
            )  # fmt: skip
        except papermill.PapermillExecutionError as err:
            raise InputError(f"{notebook}: cell {err.exec_count} raised {err.ename}: "
                             f"{err.evalue}") from None  # fmt: skip
        body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
        drawn = sorted(p for p in tmp.iterdir() if p.suffix in (".pdf", ".png"))
        with atomic_file(out) as tmp_out:
            os.replace(executed, tmp_out)
        with atomic_file(html) as tmp_html:
            tmp_html.write_text(body)
        for path in drawn:
            os.replace(path, figures / path.name)
    log.info("executed %s -> %s (%s), %d figure files", notebook, out, html.name, len(drawn))
    return [figures / p.name for p in drawn]
