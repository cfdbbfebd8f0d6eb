"""Self-contained HTML from a report's Markdown: figures embedded, one file to open or mail.

The Markdown is rendered with markdown-it (CommonMark plus tables); every image whose file
sits beside the report is inlined as a base64 ``data:`` URI, and links to other reports'
``report.md`` point at their ``report.html``.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.45; color: #1b1b1b; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; vertical-align: top; }
th { background: #f3f3f3; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; }
code, pre { background: #f5f5f5; }
pre { padding: 0.6rem; overflow-x: auto; }
strong { white-space: nowrap; }
"""

IMAGE = re.compile(r'<img src="([^"]+)"')
REPORT_LINK = re.compile(r'href="([^"]*)report\.md"')


def inline_images(body: str, folder: Path) -> str:
    """Replace ``<img src="x.png">`` by the PNG's bytes when ``folder/x.png`` exists."""

    def embedded(match: re.Match[str]) -> str:
        path = folder / html.unescape(match.group(1))
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img src="data:image/png;base64,{data}"'

    return IMAGE.sub(embedded, body)


def to_html(markdown: str, folder: Path, title: str) -> str:
    """A complete HTML page from Markdown, with the images found in ``folder`` inlined."""
    body = MarkdownIt("commonmark").enable("table").render(markdown)
    body = REPORT_LINK.sub(r'href="\1report.html"', inline_images(body, folder))
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )


def write_html(markdown_file: Path) -> Path:
    """Write ``X.html`` beside ``X.md``; the page's title is the Markdown's first heading."""
    text = markdown_file.read_text()
    first = next((line for line in text.splitlines() if line.startswith("# ")), "# report")
    path = markdown_file.with_suffix(".html")
    path.write_text(to_html(text, markdown_file.parent, first[2:]))
    return path
