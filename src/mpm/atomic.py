"""Write outputs under a temporary name and rename only on success.

A crash, an exception or a kill never leaves a partial file under its final name.
"""

import contextlib
import os
import shutil
from pathlib import Path


def _temp_sibling(final: Path) -> Path:
    return final.with_name(f".{final.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike):
    """Yield a temporary path next to `final`; rename it to `final` if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as err:
        raise _naming(err, final) from err
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike):
    """Yield a temporary directory next to `final`; it replaces `final` if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(final)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as err:
        raise _naming(err, final) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _naming(err: OSError, final: Path) -> OSError:
    """A failed write (disk full, file too large) names the output it was writing; errors
    of a write to an open file carry no file name of their own."""
    if err.filename is not None:
        return err
    return OSError(err.errno, err.strerror or str(err), str(final))
