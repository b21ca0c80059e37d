"""Split text into overlapping chunks of at most ``size`` characters along paragraph and sentence lines.

Pure functions; the chunk ids they produce are stable across runs, so re-ingesting is idempotent.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_PARAGRAPH = re.compile(r"\n\s*\n")
# A line that starts a list item, a heading or a table row: a natural place to split a long paragraph.
_LINE = re.compile(r"\n(?=\s*(?:[-*+>|#]|\d+[.)])\s)")
# A sentence ends at . ! or ? after something other than a bare list number ("1."), before a space.
_SENTENCE = re.compile(r"(?<=[^\s\d][.!?])\s+(?=\S)")


class ChunkingError(ValueError):
    """Chunk size and overlap that cannot work together."""


@dataclass(frozen=True)
class TextChunk:
    """A chunk of one document: its stable id, position and text."""

    chunk_id: str
    index: int
    text: str


def check_sizes(size: int, overlap: int) -> None:
    """Raise :class:`ChunkingError` unless ``0 <= overlap < size`` and ``size >= 32``."""
    if size < 32:
        raise ChunkingError(f"chunk size must be at least 32 characters, got {size}")
    if not 0 <= overlap < size:
        raise ChunkingError(f"chunk overlap must be at least 0 and less than the chunk size ({size}), got {overlap}")


def _pieces(text: str, size: int) -> list[tuple[str, str]]:
    """``(separator, piece)`` pairs: paragraphs; a paragraph longer than ``size`` becomes lines, a longer
    line sentences, a longer sentence runs of words. The separator joins the piece to the one before.
    """
    out: list[tuple[str, str]] = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = paragraph.strip()
        sep = "\n\n"
        for line in [paragraph] if len(paragraph) <= size else _LINE.split(paragraph):
            for sentence in [line] if len(line) <= size else _SENTENCE.split(line):
                for piece in [sentence] if len(sentence) <= size else _hard_split(sentence, size):
                    if piece.strip():
                        out.append((sep, piece.strip()))
                    sep = " "
                sep = " "
            sep = "\n"
    return out


def _hard_split(text: str, size: int) -> list[str]:
    """Runs of whole words of at most ``size`` characters (a longer word is cut)."""
    out, current = [], ""
    for word in text.split():
        while len(word) > size:
            if current:
                out.append(current)
                current = ""
            out.append(word[:size])
            word = word[size:]
        if current and len(current) + 1 + len(word) > size:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out


Pieces = list[tuple[str, str]]


def _join(pieces: Pieces) -> str:
    return "".join(piece if i == 0 else sep + piece for i, (sep, piece) in enumerate(pieces))


def _tail(pieces: Pieces, overlap: int) -> Pieces:
    """The last whole pieces of a chunk that fit in ``overlap`` characters, else the last words that do."""
    for start in range(len(pieces)):
        if len(_join(pieces[start:])) <= overlap:
            return pieces[start:]
    if not overlap or not pieces:
        return []
    sep, last = pieces[-1]
    words = last[-overlap:].split(" ", 1)
    fragment = words[-1] if len(words) > 1 else words[0]
    return [(sep, fragment)] if fragment else []


def split_text(text: str, size: int, overlap: int) -> list[str]:
    """Chunks of at most ``size`` characters; each starts with up to ``overlap`` characters of the previous one.

    Paragraphs are kept whole when they fit, then lines, then sentences, then words.
    """
    check_sizes(size, overlap)
    chunks: list[str] = []
    current: Pieces = []
    fresh = False  # whether `current` holds anything beyond the overlap carried from the previous chunk
    for piece in _pieces(text, size):
        if current and len(_join([*current, piece])) > size:
            if fresh:
                chunks.append(_join(current))
                current = _tail(current, overlap)
            while current and len(_join([*current, piece])) > size:
                current = current[1:]  # the overlap and the next piece together do not fit: less overlap
        current.append(piece)
        fresh = True
    if fresh:
        chunks.append(_join(current))
    return chunks


def chunk_id(source: str, text: str, occurrence: int = 0) -> str:
    """A stable id from the source, the chunk's content and which repeat of that content it is."""
    digest = hashlib.sha256(f"{source}\x00{occurrence}\x00{text}".encode()).hexdigest()
    return digest[:32]


def chunk_document(source: str, text: str, size: int, overlap: int) -> list[TextChunk]:
    """The document's chunks with content-derived ids: an edit changes only the ids of the chunks it touches."""
    seen: dict[str, int] = {}
    out = []
    for index, piece in enumerate(split_text(text, size, overlap)):
        occurrence = seen.get(piece, 0)
        seen[piece] = occurrence + 1
        out.append(TextChunk(chunk_id=chunk_id(source, piece, occurrence), index=index, text=piece))
    return out
