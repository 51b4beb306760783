"""What the fine-tuning data recipes (data/sst2, data/stsb, data/ud_ewt, data/wnut17) share: take
each source file from a local folder (--input) or download it once, convert it, and write the
task files that finetune.py reads, atomically, into the recipe's folder."""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from minilm.checkpoint import atomic_write_text
from minilm.data.corpus import not_utf8
from minilm.data.download import cache_dir, fetch


def recipe_parser(doc: str, name: str, here: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", type=Path, help="a folder holding local copies of the source files (default: download them)")
    p.add_argument("--out", type=Path, default=here, help="where the task files go (default: %(default)s)")
    p.add_argument("--cache-dir", type=Path, default=cache_dir(name), help="where downloads are kept (default: %(default)s)")
    return p


def source(args, local_names: list[str], url: str | None, member: str | None = None, required: bool = True) -> Path | None:
    """The first of `local_names` found in --input; without --input, `url` downloaded (and, for a
    zip archive, its `member` extracted) into the cache. None when an optional file is absent."""
    if args.input is not None:
        for name in local_names:
            if (args.input / name).is_file():
                return args.input / name
        if required:
            raise SystemExit(f"error: --input {args.input}: none of {', '.join(local_names)} is there")
        return None
    if url is None:
        return None
    hint = f"Pass a folder with local copies instead: --input DIR (holding {local_names[0]})"
    archive = fetch(url, args.cache_dir / url.rsplit("/", 1)[-1], hint)
    if member is None:
        return archive
    target = args.cache_dir / member.replace("/", "_")
    if not target.is_file():
        with zipfile.ZipFile(archive) as z:
            atomic_write_text(target, z.read(member).decode("utf-8"))
    return target


def read_tsv(path: Path, header: bool = True) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a TSV file read without quoting (GLUE's files hold bare quotes)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    rows = [line.split("\t") for line in lines if line.strip()]
    return (rows[0], rows[1:]) if header else ([], rows)


def column(path: Path, header: list[str], name: str) -> int:
    if name not in header:
        raise SystemExit(f"error: {path}: no column {name!r} (found: {', '.join(header)})")
    return header.index(name)


def write_tsv(path: Path, header: list[str], rows) -> int:
    """Write a TSV task file (no quoting; runs of whitespace inside a field become one space,
    so no field holds a tab or a newline); returns the number of rows."""
    lines = ["\t".join(header)] + ["\t".join(" ".join(str(v).split()) for v in row) for row in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return len(lines) - 1
