"""The one renderer of the tables the commands print and the report writes, and what a column
of the printed comparison declares (`Column`)."""

from collections.abc import Collection, Sequence
import dataclasses
from typing import Any, Callable

# How a column's numbers print: (scale, format spec).
FORMATS = {"pct": (100, ".2f"), "f3": (1, ".3f"), "int": (1, ".0f"), "f2": (1, ".2f")}


@dataclasses.dataclass(frozen=True)
class Column:
  """One column of the printed comparison (`results.table`, report.json's `table1`)."""
  header: str
  get: Callable[[dict], Any]             # a record -> its number, None where not computed
  format: str                            # a key of FORMATS: "pct" is a fraction shown in %
  # A trial's own 95% interval over its audit examples, [lo, hi] or None: what a row with a
  # single trial shows instead of an interval over seeds.
  interval: Callable[[dict], Any] | None = None
  # What the cell also names of each trial (the headline's attack), or None.
  named: Callable[[dict], str | None] | None = None


def text(rows: Sequence[Sequence[str]], *, left: Collection[int] = (0,), rule: bool = True,
         indent: str = "") -> list[str]:
  """Rows of cells as aligned text lines.

  Args:
    rows: the header first, then one list of cells per row, all of one length.
    left: the columns aligned left (names, configurations); the rest are numbers, aligned right.
    rule: a line of dashes under the header.
    indent: put before every line.

  Returns:
    The lines, without trailing spaces.
  """
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  lines = [indent + "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                              for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
           for row in rows]
  if rule:
    lines.insert(1, indent + "  ".join("-" * w for w in widths))
  return lines


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  """A Markdown table: the first column aligned left, the others (numbers) right.

  Args:
    header: the column headers.
    rows: one list of cells per row.

  Returns:
    The table's lines.
  """
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
  return lines + ["| " + " | ".join(row) + " |" for row in rows]
