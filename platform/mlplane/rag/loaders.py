"""Load a corpus: every .md, .txt and .html file under a directory, as plain text with a title."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".md", ".markdown", ".txt", ".html", ".htm")


class CorpusError(Exception):
    """The corpus path is missing, unreadable or holds no documents; the message says which."""


@dataclass(frozen=True)
class Document:
    """One source document: its id (path relative to the corpus root), title, text and content hash."""

    source: str
    title: str
    text: str

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(f"{self.title}\n{self.text}".encode()).hexdigest()


def html_to_text(html: str) -> tuple[str, str]:
    """``(title, text)`` of an HTML page: scripts and styles dropped, one paragraph per block element."""
    from bs4 import BeautifulSoup  # beautifulsoup4: the `rag` extra

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    heading = soup.find("h1")
    title = (soup.title.get_text(" ", strip=True) if soup.title else "") or (
        heading.get_text(" ", strip=True) if heading else "")
    body = soup.body or soup
    blocks = []
    for block in body.find_all(["h1", "h2", "h3", "h4", "p", "li", "pre", "td", "th", "dt", "dd"]):
        if block.find(["p", "li", "pre", "td"]):  # a container: its children are taken on their own
            continue
        text = block.get_text(" ", strip=True)
        if text:
            blocks.append(f"{'#' * int(block.name[1])} {text}" if block.name in ("h1", "h2", "h3", "h4") else text)
    return title, "\n\n".join(blocks)


def _markdown_title(text: str) -> str:
    match = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
    return match.group(1).strip() if match else ""


def load_document(path: Path, source: str) -> Document:
    """One file as a :class:`Document`; the title is the first heading (or line, for text files)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"{path}: cannot read as UTF-8 text ({exc})") from None
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        title, text = html_to_text(raw)
    elif suffix in (".md", ".markdown"):
        title, text = _markdown_title(raw), raw.strip()
    else:
        text = raw.strip()
        title = text.splitlines()[0].strip() if text else ""
    return Document(source=source, title=title or path.stem, text=text)


def load_corpus(path: str | Path) -> list[Document]:
    """Every supported, non-empty document under ``path`` (or ``path`` itself), sorted by source.

    Sources are POSIX paths relative to ``path`` (the file name when ``path`` is a file).
    """
    root = Path(path)
    if not root.exists():
        raise CorpusError(f"{path}: no such file or directory")
    if root.is_file():
        if root.suffix.lower() not in SUFFIXES:
            raise CorpusError(f"{path}: unsupported file type '{root.suffix}'; supported: {', '.join(SUFFIXES)}")
        files = [(root, root.name)]
    else:
        files = [(f, f.relative_to(root).as_posix()) for f in sorted(root.rglob("*"))
                 if f.is_file() and f.suffix.lower() in SUFFIXES
                 and not any(part.startswith(".") for part in f.relative_to(root).parts)]
    docs = [doc for f, source in files if (doc := load_document(f, source)).text]
    if not docs:
        raise CorpusError(f"{path}: no documents to ingest (looked for non-empty {', '.join(SUFFIXES)} files)")
    return docs
