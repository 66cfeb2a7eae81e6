"""The CSV that lists a cohort's scans: columns ``image`` (a NIfTI file or a DICOM series folder; several joined by
``;`` are modalities), ``label``, ``split``, optionally ``mask``; paths relative to the CSV's folder. Checked as a
whole before any scan is read, each problem one line naming the CSV's line and the fix.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from .dataset import SPLITS

REQUIRED_COLUMNS = ("image", "label", "split")


@dataclass(frozen=True)
class Row:
    """One CSV row with resolved paths; ``line`` is its line in the CSV, ``position`` its volume index in its split."""

    line: int
    images: tuple[Path, ...]
    label: int
    split: str
    mask: Path | None
    position: int

    @property
    def files(self) -> list[Path]:
        return [*self.images, *([self.mask] if self.mask is not None else [])]


def read_table(csv_path: str | os.PathLike, num_classes: int | None = None) -> tuple[list[Row], int]:
    """Rows of the CSV, validated as a whole (columns, labels, splits, channel counts), and num_classes."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"CSV {csv_path} not found: give the path of a CSV with columns {', '.join(REQUIRED_COLUMNS)}"
        )
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's byte-order mark
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            raws = []
            for raw in reader:
                if raw.get(None):  # DictReader's place for cells beyond the header
                    raise ValueError(
                        f"{csv_path}:{reader.line_num} has {len(raw[None])} more cell(s) than the header "
                        "has columns: quote values holding commas, or add the missing column names"
                    )
                raws.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        problem = getattr(err, "strerror", None) or (str(err).splitlines() or [type(err).__name__])[0]
        if isinstance(err, UnicodeDecodeError):
            problem = "it is not UTF-8 text: a binary file, or saved in another encoding"
        raise ValueError(
            f"CSV {csv_path} cannot be read ({problem}): give a UTF-8 text file whose "
            f"first line is the header {','.join(REQUIRED_COLUMNS)}"
        ) from err
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        one = len(columns) == 1 and any(sep in columns[0] for sep in ";\t")
        hint = " (the header is a single column: separate columns with commas, not ';' or tabs)" if one else ""
        raise ValueError(
            f"{csv_path} lacks column(s) {', '.join(missing)}: required columns are "
            f"{', '.join(REQUIRED_COLUMNS)} (optional: mask), found {', '.join(columns) or 'none'}{hint}"
        )
    seen = dict.fromkeys(SPLITS, 0)
    rows = [_parse_row(cells, line, csv_path, seen) for line, cells in raws]
    if not rows:
        raise ValueError(f"{csv_path} has no data rows: add one row per scan")
    for row in rows:
        if len(row.images) != len(rows[0].images):
            raise ValueError(
                f"{csv_path}:{row.line} has {len(row.images)} image(s), line {rows[0].line} has "
                f"{len(rows[0].images)}: every row needs the same modalities"
            )
    top = max(r.label for r in rows)
    if num_classes is None:
        num_classes = max(2, top + 1)
    elif top >= num_classes:
        line = next(r.line for r in rows if r.label == top)
        raise ValueError(
            f"{csv_path}:{line} has label {top} but num_classes={num_classes}: raise num_classes or fix the label"
        )
    return rows, num_classes


def _parse_row(cells: dict[str, str], line: int, csv_path: Path, seen: dict[str, int]) -> Row:
    """One checked row; ``seen`` counts the rows of each split so far."""
    where = f"{csv_path}:{line}"
    for col in REQUIRED_COLUMNS:
        if not cells.get(col):
            raise ValueError(f"{where}: empty {col!r}; fill it in or delete the row")
    try:
        label = int(cells["label"])
    except ValueError:
        raise ValueError(f"{where}: label {cells['label']!r} is not an integer class index") from None
    if label < 0:
        raise ValueError(f"{where}: label {label} is negative; classes are 0, 1, ...")
    split = cells["split"]
    if split not in SPLITS:
        raise ValueError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    images = tuple(csv_path.parent / Path(p.strip()).expanduser() for p in cells["image"].split(";") if p.strip())
    mask = csv_path.parent / Path(cells["mask"]).expanduser() if cells.get("mask") else None
    seen[split] += 1
    return Row(line, images, label, split, mask, seen[split] - 1)
