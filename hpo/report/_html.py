"""A static HTML page: headings, paragraphs, tables and PNG figures, with no script and no external asset.

The page records every image it references, so callers (and tests) can check each one exists.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# A trailing backslash continues a rule on the next source line without adding a newline to the CSS.
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px; \
color: #222; padding: 0 1rem; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.55rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0; } img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.88rem; } .note { color: #555; } \
pre { white-space: pre-wrap; background: #f7f7f7; padding: 0.8rem; }
"""


def fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class Page:
    title: str
    parts: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, *, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def preformatted(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = []
        for row in rows:
            cells = "".join(
                f'<td class="num">{html.escape(fmt(v))}</td>'
                if isinstance(v, (int, float)) and not isinstance(v, bool)
                else f"<td>{html.escape(fmt(v))}</td>"
                for v in row
            )
            body.append(f"<tr>{cells}</tr>")
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def image(self, file: str, caption: str) -> None:
        """Reference a PNG in the page's folder (the caller has written it)."""
        self.images.append(file)
        alt = html.escape(caption, quote=True)
        self.parts.append(
            f'<figure><img src="{html.escape(file, quote=True)}" alt="{alt}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def render(self) -> str:
        return (
            "<!DOCTYPE html>\n"
            f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            '<link rel="icon" href="data:,">'
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(self.parts) + "\n</body></html>\n"
        )
