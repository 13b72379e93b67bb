"""Small shared helpers: atomic writes, JSON with non-finite numbers, safe torch.load, run metadata."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_torch_save",
    "safe_torch_load",
    "write_json",
    "read_json",
    "sha256_file",
    "cache_root",
    "git_commit",
    "run_metadata",
    "progress",
    "CHECKSUM_KEY",
    "content_digest",
    "with_checksum",
    "verify_checksum",
]


def _umask() -> int:
    """The process umask (read by setting and restoring it; done once, at import)."""
    old = os.umask(0)
    os.umask(old)
    return old


#: Mode of the files srd writes: what open() would give (0666 minus the umask), not mkstemp's 0600.
FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def _atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, FILE_MODE)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with _atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file and rename: an interrupted write never leaves a broken file."""
    with _atomic_path(path) as tmp:
        torch.save(obj, tmp)


def safe_torch_load(path: str | os.PathLike, *, what: str = "file") -> Any:
    """Load a .pt file with ``weights_only=True`` (no arbitrary unpickling); clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with context
        raise ValueError(
            f"cannot load {what} {path} safely (torch.load with weights_only=True): {err}. "
            "srd only reads tensors, numbers, strings, lists and dicts from .pt files."
        ) from None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "inf", "nan": JSON has no literal for them
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _jsonable(obj.item())
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, or of a folder's ``*.cif`` files (names and bytes, in sorted order): the one
    digest srd uses for caches and provenance."""
    h = hashlib.sha256()
    path = Path(path)
    files = sorted(path.glob("*.cif")) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(f.name.encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def cache_root(kind: str) -> Path:
    """The cache folder of one kind of derived data (``features``, ``fingerprints``):
    ``$SRD_CACHE_DIR/<kind>``, else ``~/.cache/srd/<kind>``."""
    env = os.environ.get("SRD_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "srd") / kind


def _git(*args: str) -> subprocess.CompletedProcess | None:
    """``git -C <the srd checkout> ARGS``; None when git cannot run."""
    root = Path(__file__).resolve().parents[2]
    try:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit() -> str | None:
    """The git commit of the srd checkout, when srd runs from one."""
    out = _git("rev-parse", "HEAD")
    return (out.stdout.strip() or None) if out is not None else None


def git_dirty() -> bool | None:
    """Whether the checkout's tracked files differ from its commit (then git_commit alone does not say
    which code ran); None outside a checkout."""
    out = _git("status", "--porcelain", "--untracked-files=no")
    return bool(out.stdout.strip()) if out is not None and out.returncode == 0 else None


def pool_worker_init() -> None:
    """The initializer of every multiprocessing pool srd forks: SIGTERM kills the worker (the default),
    SIGINT is left to the parent. A worker forked from a process whose SIGTERM handler raises
    (srd.cli._common.run) would raise wherever the signal lands, possibly holding the pool's queue lock;
    Pool.terminate() at the end then waits for ever on a sibling blocked on that lock."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_metadata() -> dict:
    """Package version, git commit (and whether tracked files had uncommitted changes), torch version:
    saved with every output folder and checkpoint."""
    from . import __version__

    return {
        "srd_version": __version__,
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "torch_version": str(torch.__version__),
    }


def progress(
    iterable=None, *, total=None, desc: str = "", unit: str = "it", disable: bool | None = None, **kw
):
    """A tqdm progress bar on stderr.

    ``disable=None`` (the default of the tools): shown when stderr is a terminal, silent when it is a file
    or a pipe (logs of batch jobs stay clean); SRD_PROGRESS=1 forces bars on, SRD_PROGRESS=0 off. An
    explicit ``disable=True`` (the tools' -q/--quiet) always wins; ``disable=False`` still honours the
    terminal rule, so that redirected output never fills with bars.
    """
    import sys

    from tqdm.auto import tqdm

    env = os.environ.get("SRD_PROGRESS")
    if disable is not True:
        if env is not None:
            disable = env == "0"
        else:
            disable = not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, **kw)


# ------------------------------------------------------------------------------------------------
# Content checksums of saved dicts (feature files, checkpoints)
# ------------------------------------------------------------------------------------------------
#: The key under which :func:`with_checksum` stores the digest in a saved dict.
CHECKSUM_KEY = "checksum"
_CHECKSUM_PREFIX = "sha256:"


def _digest_update(h: Any, obj: Any) -> None:
    """Feed a canonical, type-tagged, length-prefixed encoding of ``obj`` to the hash ``h``.

    Tensors contribute their dtype, shape and bytes (in C order, from the CPU); dicts their items sorted by
    the encoding of the keys (so the insertion order does not matter); lists and tuples are the same thing
    (a round trip through a file may turn one into the other).
    """

    def put(tag: bytes, payload: bytes) -> None:
        h.update(tag)
        h.update(len(payload).to_bytes(8, "little"))
        h.update(payload)

    if obj is None:
        put(b"N", b"")
    elif isinstance(obj, bool):
        put(b"?", b"1" if obj else b"0")
    elif isinstance(obj, int):
        put(b"i", str(int(obj)).encode())
    elif isinstance(obj, float):
        put(b"f", repr(float(obj)).encode())
    elif isinstance(obj, str):
        put(b"s", str(obj).encode("utf-8", "surrogatepass"))
    elif isinstance(obj, bytes | bytearray):
        put(b"b", bytes(obj))
    elif isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.layout != torch.strided:
            t = t.to_dense()
        t = t.cpu().contiguous()
        put(b"t", f"{t.dtype}|{list(t.shape)}".encode())
        raw = t.reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
        put(b"T", b"")  # the data follow, length-prefixed
        h.update(int(raw.numel()).to_bytes(8, "little"))
        h.update(memoryview(raw.numpy()))
    elif isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            kh = hashlib.sha256()
            _digest_update(kh, k)
            items.append((kh.digest(), k, v))
        items.sort(key=lambda item: item[0])
        put(b"d", len(items).to_bytes(8, "little"))
        for kd, _, v in items:
            h.update(kd)
            _digest_update(h, v)
    elif isinstance(obj, list | tuple):
        put(b"l", len(obj).to_bytes(8, "little"))
        for v in obj:
            _digest_update(h, v)
    elif isinstance(obj, torch.dtype | torch.device):
        put(b"r", f"{type(obj).__name__}:{obj}".encode())
    elif hasattr(obj, "item") and callable(obj.item) and not hasattr(obj, "__len__"):  # numpy scalars
        _digest_update(h, obj.item())
    elif hasattr(obj, "tobytes") and hasattr(obj, "dtype") and hasattr(obj, "shape"):  # numpy arrays
        _digest_update(h, torch.from_numpy(obj.copy()))
    else:
        raise TypeError(f"content_digest: cannot hash a {type(obj).__name__}")


def content_digest(obj: Any) -> str:
    """sha256 (hex) of ``obj``'s contents: every tensor's dtype, shape and bytes and every plain value, in
    a canonical order (dict keys sorted), so that a saved and reloaded object has the same digest."""
    h = hashlib.sha256()
    _digest_update(h, obj)
    return h.hexdigest()


def with_checksum(d: dict) -> dict:
    """A shallow copy of ``d`` with ``d[CHECKSUM_KEY] = "sha256:<content_digest of the other entries>"``."""
    body = {k: v for k, v in d.items() if k != CHECKSUM_KEY}
    return {**body, CHECKSUM_KEY: _CHECKSUM_PREFIX + content_digest(body)}


def verify_checksum(d: dict, where: str) -> bool:
    """Check the checksum stored by :func:`with_checksum` (raise ValueError naming ``where`` if it differs).

    Returns True when ``d`` had a checksum, False when it has none (a file written before srd stored them,
    accepted as it is).
    """
    if not isinstance(d, dict) or CHECKSUM_KEY not in d:
        return False
    stored = d[CHECKSUM_KEY]
    if not isinstance(stored, str) or not stored.startswith(_CHECKSUM_PREFIX):
        raise ValueError(
            f"{where}: checksum mismatch: the file is corrupted (its {CHECKSUM_KEY!r} entry is "
            f"{str(stored)[:40]!r}, not a sha256 digest); it was not used. Restore a good copy or re-create it"
        )
    try:
        actual = content_digest({k: v for k, v in d.items() if k != CHECKSUM_KEY})
    except TypeError as err:
        raise ValueError(
            f"{where}: checksum mismatch: the file is corrupted ({err}); it was not used"
        ) from None
    expected = stored[len(_CHECKSUM_PREFIX) :]
    if actual != expected:
        raise ValueError(
            f"{where}: checksum mismatch: the file is corrupted (its contents hash to sha256 {actual[:16]}..., "
            f"but {expected[:16]}... was stored when it was written); it was not used. Restore a good copy "
            "or re-create it"
        )
    return True


# ------------------------------------------------------------------------------------------------
# Devices and termination (shared by the library and the srd commands)
# ------------------------------------------------------------------------------------------------
__all__ += ["resolve_device", "Terminated"]


def resolve_device(name: str | None) -> torch.device:
    """'auto' (or None) -> cuda if available else cpu; anything else is validated."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return dev


class Terminated(KeyboardInterrupt):
    """Raised on SIGTERM. A subclass of KeyboardInterrupt, so every ``except KeyboardInterrupt`` that saves
    finished work on Ctrl-C does the same on SIGTERM."""


# ------------------------------------------------------------------------------------------------
# Output paths (checked by every tool before any work)
# ------------------------------------------------------------------------------------------------
__all__ += ["check_output_dir", "check_output_file"]


def check_output_dir(path, *, flag: str = "-o/--out", create: bool = True) -> Path:
    """Check, before any work, that ``path`` is (or can be created as) a writable folder; return it.

    With ``create`` the folder is created (a probe file checks that it is writable); without, nothing is
    written: a missing folder's nearest existing parent must be a writable folder. Raises ValueError
    naming the flag when the path is a file, or cannot be created or written.
    """
    import os
    import tempfile

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a folder")
    if not create:
        parent = path
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise ValueError(f"{flag} {path}: cannot create the folder ({parent} is not a folder)")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{flag} {path}: {parent} is not writable")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot create the folder ({err.strerror or err})") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".srd-write-probe.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"{flag} {path}: the folder is not writable ({err.strerror or err})") from None
    return path


def check_output_file(path, *, flag: str = "-o/--output") -> Path:
    """Check, before any work, that ``path`` can be written as a file (not a folder; its folder writable)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a folder; expected a file name")
    check_output_dir(path.parent if str(path.parent) else Path("."), flag=f"{flag} {path}: its folder")
    return path
