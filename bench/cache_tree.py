"""Cache entries that are directories (a pre-trained HF model, generated task data), made safe like
:class:`bench.context.Cache` files: built in a uniquely named temp directory, given a manifest of
every file's sha256 (``SHA256SUMS``, ``sha256sum`` format, written last), published by one atomic
rename; on use the manifest is checked, and a directory that does not match (truncated or edited
file, missing manifest) is named on stderr, moved aside and rebuilt, never trusted.

Typical use::

    d = cache_tree.verified(final)          # final if intact, else None (a bad one is moved aside)
    if d is None:
        tmp = cache_tree.temp_dir(final)
        build(tmp)
        d = cache_tree.publish(tmp, final)  # writes the manifest, renames; a racing winner is kept
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import sys
from pathlib import Path

MANIFEST = "SHA256SUMS"
TMP_MARK = ".tmp-"  # in the names of build directories (``bench doctor`` may remove stale ones)


def _files(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if p.is_file() and p.name != MANIFEST)


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(d: Path) -> Path:
    """Record the sha256 of every file under ``d`` (relative POSIX paths) in ``d/SHA256SUMS``."""
    lines = [f"{_sha256(p)}  {p.relative_to(d).as_posix()}\n" for p in _files(d)]
    out = d / MANIFEST
    out.write_text("".join(lines))
    return out


def problem(d: Path) -> str | None:
    """Why directory ``d`` must not be trusted (no manifest, a file missing, added or changed), or None."""
    try:
        lines = (d / MANIFEST).read_text().splitlines()
    except FileNotFoundError:
        return f"no {MANIFEST} (written before checksums, or its build was interrupted)"
    except (OSError, UnicodeDecodeError) as e:
        return f"unreadable {MANIFEST} ({e})"
    want = {}
    for line in lines:
        digest, _, rel = line.partition("  ")
        want[rel] = digest
    have = {p.relative_to(d).as_posix(): p for p in _files(d)}
    if set(have) != set(want):
        diff = sorted(set(have) ^ set(want))
        return f"files differ from {MANIFEST}: {diff[:5]}"
    for rel, p in have.items():
        if _sha256(p) != want[rel]:
            return f"{rel}: sha256 does not match {MANIFEST} (truncated or damaged)"
    return None


def verified(final: Path) -> Path | None:
    """``final`` if it exists and matches its manifest; else None. A damaged one is named on stderr and
    moved aside (``<name>.corrupt-<hex>``, then deleted), so the caller rebuilds it."""
    if not final.is_dir():
        return None
    why = problem(final)
    if why is None:
        return final
    print(f"[bench] warning: cache directory {final} is corrupt ({why}): rebuilding it", file=sys.stderr, flush=True)
    aside = final.with_name(f"{final.name}.corrupt-{secrets.token_hex(4)}")
    with contextlib.suppress(FileNotFoundError, OSError):
        os.replace(final, aside)
        shutil.rmtree(aside, ignore_errors=True)
    return None


def temp_dir(final: Path) -> Path:
    """A fresh, uniquely named build directory beside ``final`` (pid + random: unique per process and call)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    return tmp


def publish(tmp: Path, final: Path) -> Path:
    """Write ``tmp``'s manifest and rename it to ``final``; if another process published first, keep
    theirs (when intact) and delete ``tmp``. Returns ``final``."""
    write_manifest(tmp)
    for _ in range(2):
        try:
            os.rename(tmp, final)  # fails if final exists and is not empty: the race's loser
            return final
        except OSError:
            if verified(final) is not None:  # theirs is intact: keep it
                shutil.rmtree(tmp, ignore_errors=True)
                return final
    shutil.rmtree(tmp, ignore_errors=True)
    raise RuntimeError(f"cache directory {final}: cannot publish {tmp.name} (another process keeps replacing it)")
