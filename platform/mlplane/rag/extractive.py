"""An extractive answerer: the retrieved sentences that best match the question, each citing its chunk.

No model and no generation: it cannot make things up, and it is the baseline a generator must beat.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from mlplane.rag.store import Hit

NO_ANSWER = "The indexed documents do not say."
_STOPWORDS = ("a an and are as at be by can do does for from has have how i if in into is it its of on or so that "
              "the their then there these this to was what when where which who why will with you your")
STOPWORDS = frozenset(_STOPWORDS.split())
_TOKEN = re.compile(r"[a-z0-9]+")
# A sentence ends at . ! ? followed by space and an upper-case letter, digit, quote or backtick.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])")
_PARAGRAPH = re.compile(r"\n\s*\n")
# A line break before a list item, heading, quote or table row ends a line; other breaks are wrapping.
_BLOCK_LINE = re.compile(r"\n(?=\s*(?:[-*+>|#]|\d+[.)])\s)")
_MARKUP = re.compile(r"^\s*(?:[#>]+|[-*+]|\d+[.)]|\|)\s*")


def tokens(text: str) -> list[str]:
    """Lower-case word tokens without stopwords, plural 's' dropped (used for matching and for token F1)."""
    return [_singular(t) for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS]


def _singular(token: str) -> str:
    return token[:-1] if len(token) > 3 and token.endswith("s") and not token.endswith("ss") else token


@dataclass(frozen=True)
class _Sentence:
    text: str
    hit: int  # 1-based index into the hits, the citation number
    order: int  # position among all sentences, to keep ties stable


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: wrapped lines joined, list/heading markup dropped, code fences and short bits left out."""
    out = []
    for paragraph in _PARAGRAPH.split(text):
        if paragraph.lstrip().startswith("```"):
            continue
        for line in _BLOCK_LINE.split(paragraph):
            line = " ".join(_MARKUP.sub("", line).split())
            for raw in _SENTENCE_END.split(line):
                sentence = raw.strip().strip("|").strip()
                if len(_TOKEN.findall(sentence)) >= 4 and not set(sentence) <= set("-|: "):
                    out.append(sentence)
    return out


def extractive_answer(question: str, hits: list[Hit], max_sentences: int = 3) -> str:
    """Up to ``max_sentences`` sentences from ``hits`` that best cover the question, each ending in ``[n]``.

    ``[n]`` cites ``hits[n-1]``. Sentences are scored by the rarer question words they contain
    (inverse frequency among the retrieved sentences) and, slightly, by their chunk's rank.
    """
    wanted = set(tokens(question))
    found = [(text, i) for i, hit in enumerate(hits, start=1) for text in split_sentences(hit.text)]
    sentences = [_Sentence(text, i, n) for n, (text, i) in enumerate(found)]
    if not wanted or not sentences:
        return NO_ANSWER
    bags = [set(tokens(s.text)) for s in sentences]
    df = Counter(t for bag in bags for t in bag & wanted)
    idf = {t: math.log(1 + len(sentences) / df[t]) for t in df}

    def score(k: int) -> float:
        matched = sum(idf[t] for t in bags[k] & wanted)
        return matched / math.sqrt(1 + len(bags[k])) + 0.05 / sentences[k].hit

    ranked = sorted(range(len(sentences)), key=lambda k: (-score(k), sentences[k].order))
    chosen: list[int] = []
    texts: set[str] = set()
    for k in ranked:
        if len(chosen) == max_sentences or not bags[k] & wanted:
            break
        if sentences[k].text not in texts:  # overlapping chunks repeat sentences
            chosen.append(k)
            texts.add(sentences[k].text)
    if not chosen:
        return NO_ANSWER
    return " ".join(f"{_terminated(sentences[k].text)} [{sentences[k].hit}]" for k in chosen)


def _terminated(sentence: str) -> str:
    return sentence if sentence[-1] in ".!?:" else sentence + "."


CITATION = re.compile(r"\[(\d+)\]")


def citations(answer: str) -> list[int]:
    """The citation numbers in ``answer``, in order of first appearance."""
    return list(dict.fromkeys(int(n) for n in CITATION.findall(answer)))
