"""Where compresskit writes, and what it may replace.

Every command that writes a folder (a pruned model, a training run, an ONNX export) first
*claims* it, before any slow work:

- the path is made absolute, and a symbolic link is followed, so the output lands where the
  link points and the link stays valid;
- it may not be the current folder, nor a folder that is or holds one of the job's inputs
  (the model, the data, the tokenizer): `--overwrite` never reaches those;
- an existing, non-empty folder is replaced only with `overwrite`, and only when it is
  compresskit's own: every entry in it is a file compresskit writes (`COMPRESSKIT_FILES`), or,
  for an unfinished run `OUTPUT.run/`, `RUN_FILES`. A file of the user's in it is named and
  the folder is left alone;
- the nearest existing folder above it must be a writable folder, and the name short enough
  for the temporary folder written beside it;
- a lock (`.NAME.ck-lock` beside the output, held with `flock`) keeps a second run from touching
  the output of a live one. The kernel releases it when the holder dies, even by SIGKILL.

Then `atomic_directory` writes into a hidden temporary folder beside the output and renames it
into place only when complete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from compresskit.errors import OutputBusyError, OutputExistsError, OutputPathError

# What compresskit writes into an output folder: the model (config, weights, manifest), the
# tokenizer transformers saves beside it, a training run's report and figure, an ONNX export.
COMPRESSKIT_FILES = frozenset(
    {
        "compresskit.json",
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "report.json",
        "pruning.png",
        "compare.png",
        "compare.md",
        "export.json",
        "model.onnx",
        "modeling_compresskit.py",
        # tokenizers (transformers' save_pretrained of BERT, RoBERTa, DistilBERT and others)
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "vocab.txt",
        "vocab.json",
        "merges.txt",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
        "chat_template.jinja",
    }
)
# What an unfinished training run keeps in OUTPUT.run/ (job.json marks it as one).
RUN_MARKER = "job.json"
RUN_FILES = frozenset({RUN_MARKER, "plan.json", "searched.safetensors", "search", "train"})
# Room left in a file name for the temporary folder beside the output: .NAME.ck-PID-XXXXXXXX.
_SCRATCH_ROOM = 32

_held: dict[Path, int] = {}  # outputs this process has claimed -> the lock file's descriptor


def resolve_output(path: str | Path) -> Path:
    """The absolute path an output is written to: a symbolic link is followed (the link is
    kept and points at the new output), other components are kept as given."""
    target = Path(os.path.abspath(Path(path).expanduser()))
    return Path(os.path.realpath(target)) if target.is_symlink() else target


@contextmanager
def claim_output(
    path: str | Path,
    *,
    overwrite: bool,
    inputs: Iterable[str | Path | None] = (),
    run_dir: bool = False,
) -> Iterator[Path]:
    """Check that `path` may be written (see the module docstring) and hold its lock for the
    block; yields the resolved path. `run_dir`: the job also keeps an unfinished run in
    `PATH.run/`, which must be compresskit's as well. Claiming an output this process already
    holds (a nested call) checks it again and does not lock twice."""
    target = resolve_output(path)
    check_output(target, overwrite=overwrite, inputs=inputs)
    if run_dir:
        check_run_dir(run_dir_of(target), overwrite=overwrite)
    if target in _held:
        yield target
        return
    created = _make_parents(target.parent)
    try:
        _held[target] = _lock(target)
        try:
            yield target
        finally:
            _unlock(target, _held.pop(target))
    finally:
        _remove_if_empty(created)


def run_dir_of(output: Path) -> Path:
    """Where a training run keeps its unfinished work: OUTPUT.run/ beside OUTPUT."""
    return output.with_name(output.name + ".run")


def check_output(
    target: Path, *, overwrite: bool, inputs: Iterable[str | Path | None] = ()
) -> None:
    """Raise an OutputError when `target` (resolved) may not be written; see the module
    docstring for the rules."""
    _refuse_current_folder(target)
    for given in inputs:
        _refuse_replacing_input(target, given)
    _refuse_existing(target, overwrite=overwrite, owned=COMPRESSKIT_FILES)
    _check_writable(target)


def check_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    """A folder at OUTPUT.run/ must be an unfinished run of compresskit's (it is resumed or,
    with `overwrite`, started again): a folder of the user's there is never deleted."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir() or not (run_dir / RUN_MARKER).is_file():
        if run_dir.is_dir() and not any(run_dir.iterdir()):
            return
        raise OutputPathError(
            f"{run_dir} is in the way: compresskit keeps an unfinished run there, and this is "
            "not one (it has no job.json); move it away or choose another --output"
        )
    _refuse_existing(run_dir, overwrite=True, owned=RUN_FILES)


def _refuse_existing(target: Path, *, overwrite: bool, owned: frozenset[str]) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputPathError(f"output {target} is a file: give a folder's path")
    entries = sorted(p.name for p in target.iterdir())
    if not entries:
        return
    if not overwrite:
        raise OutputExistsError(
            f"output {target} already exists: choose another folder or "
            "pass overwrite=True (--overwrite)"
        )
    foreign = [name for name in entries if name not in owned]
    if foreign:
        raise OutputPathError(
            f"--overwrite would delete {target / foreign[0]}"
            f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}, which compresskit "
            "did not write: move it away, or choose another --output"
        )


def _refuse_current_folder(target: Path) -> None:
    cwd = Path.cwd()
    if target == cwd or target in cwd.parents:
        raise OutputPathError(
            f"output {target} is the current folder or holds it: give a new folder's name, "
            "e.g. out/model"
        )


def _refuse_replacing_input(target: Path, given: str | Path | None) -> None:
    if given is None or not Path(given).expanduser().exists():
        return  # not a local path (a hub id) or nothing to protect
    source = Path(os.path.realpath(Path(given).expanduser()))
    if source == target or target in source.parents:
        what = "is" if source == target else "holds"
        raise OutputPathError(
            f"output {target} {what} the input {given}: writing it would replace the input; "
            "choose another --output"
        )


def _check_writable(target: Path) -> None:
    """The nearest existing folder above `target` takes new entries, and every name to be
    created fits the file system (with room for the temporary folder beside the output)."""
    existing = target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputPathError(f"cannot write {target}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(
            f"cannot write {target}: {existing} is not writable (read-only or not yours)"
        )
    limit = _name_max(existing)
    for part in target.relative_to(existing).parts:
        room = _SCRATCH_ROOM if part == target.name else 0
        if len(part.encode()) + room > limit:
            raise OutputPathError(
                f"output name {part[:40]}… is {len(part.encode())} bytes: this file system "
                f"allows {limit - room} for it (compresskit writes a temporary "
                f"{_SCRATCH_ROOM}-byte longer name beside it)"
            )


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it created (deepest last)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
    return missing[::-1]


def _remove_if_empty(created: list[Path]) -> None:
    """Remove the parents `claim_output` made, deepest first, when the job left them empty."""
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:  # not empty: the output (or something else) is in it
            return


def _lock_path(target: Path) -> Path:
    # Beside the scratch folders, under their prefix: every .NAME.ck-* is compresskit's.
    return target.with_name(f"{_scratch_prefix(target)}lock")


def _lock(target: Path) -> int:
    """Take the output's lock, or raise OutputBusyError naming the process that holds it."""
    path = _lock_path(target)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise OutputBusyError(
                f"output {target} is being written by process {holder}: wait for it to "
                "finish, or choose another --output"
            ) from None
        # The holder before us may have removed the file after we opened it: then our lock is
        # on a file nobody else can find, so take the lock again on the path as it is now.
        if _same_file(fd, path):
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _unlock(target: Path, fd: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        _lock_path(target).unlink()  # while still held: see _lock for the one who waited
    os.close(fd)


# --- writing -----------------------------------------------------------------------------------
@contextmanager
def atomic_directory(directory: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `directory`; on success it replaces `directory`.

    The output is claimed first (see `claim_output`). On any error the temporary folder is
    removed and `directory` is left as it was. A process killed meanwhile leaves its temporary
    folder behind; the next write to `directory` removes it (and puts back a previous output
    caught between the two renames of `_replace`). The new folder gets the user's usual
    permissions (umask), not the owner-only ones of a temporary folder.
    """
    with claim_output(directory, overwrite=overwrite) as target:
        _clean_up_after_killed_writers(target)
        tmp = Path(
            tempfile.mkdtemp(prefix=f"{_scratch_prefix(target)}{os.getpid()}-", dir=target.parent)
        )
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            _replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


def _scratch_prefix(target: Path) -> str:
    # Hidden, and named after the target and the writing process, so that leftovers of a
    # killed writer can be recognised: .NAME.ck-PID-XXXX (new) and .NAME.ck-PID-old (previous).
    return f".{target.name}.ck-"


def _replace(new: Path, target: Path) -> None:
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f"{_scratch_prefix(target)}{os.getpid()}-old")
    os.replace(target, old)
    os.replace(new, target)
    _remove(old)


def _clean_up_after_killed_writers(target: Path) -> None:
    """Remove the scratch folders of writers of `target` that are no longer running. A
    previous output moved aside by a writer killed before it moved the new one in goes back."""
    prefix = _scratch_prefix(target)
    for leftover in sorted(target.parent.glob(f"{prefix}*")):
        pid = leftover.name[len(prefix) :].split("-")[0]
        if not pid.isdigit() or _is_running(int(pid)):
            continue
        if leftover.name.endswith("-old") and not target.exists():
            os.replace(leftover, target)
        else:
            _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
