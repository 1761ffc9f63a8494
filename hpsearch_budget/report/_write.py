"""Write a file atomically: a reader (or a crash) never sees half a report."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hpsearch_budget._out_file import refuse_to_replace_input
from hpsearch_budget.errors import HpauditInputError
from hpsearch_budget.ledger._export import is_special


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to a temporary file next to ``path``, fsync it, then rename over ``path``
    (a device or pipe such as ``/dev/null`` is written into instead).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.md"
    >>> write_atomic(p, "# hi\\n").read_text()
    '# hi\\n'
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise HpauditInputError(
            f"cannot write {str(target)!r}: folder {str(folder)!r} does not exist"
        )
    if target.is_dir():
        raise HpauditInputError(f"--out {str(target)!r} is a folder; name a file inside it")
    refuse_to_replace_input(target)
    if is_special(target):  # /dev/null, /dev/stdout, a pipe: write into it, never replace it
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
        return target
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a report is meant to be shared
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
