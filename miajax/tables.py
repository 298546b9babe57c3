"""The one renderer of the tables the commands print and the report writes."""

from collections.abc import Collection, Sequence


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
  """A Markdown table: the first column aligned left, the others (numbers) right."""
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
  return lines + ["| " + " | ".join(row) + " |" for row in rows]
