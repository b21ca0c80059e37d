"""Pure parts of ingestion: chunking, stable ids, the plan, loaders and the extractive answerer."""

from __future__ import annotations

import pytest
from conftest import CORPUS

from mlplane.rag.chunking import ChunkingError, chunk_document, split_text
from mlplane.rag.extractive import NO_ANSWER, citations, extractive_answer
from mlplane.rag.ingest import IngestSettings, plan
from mlplane.rag.loaders import CorpusError, Document, load_corpus
from mlplane.rag.store import Hit

PARAGRAPHS = [f"Paragraph {i} talks about topic {i}. It has a second sentence about item {i}." for i in range(12)]
TEXT = "\n\n".join(PARAGRAPHS)


def test_chunks_respect_the_size_and_keep_paragraphs_whole():
    chunks = split_text(TEXT, 200, 0)
    assert all(len(c) <= 200 for c in chunks)
    for chunk in chunks:  # every paragraph is whole, never cut
        for part in chunk.split("\n\n"):
            assert part in PARAGRAPHS
    assert "\n\n".join(chunks) == TEXT


def test_overlap_repeats_the_end_of_the_previous_chunk():
    chunks = split_text(TEXT, 200, 80)
    assert all(len(c) <= 200 for c in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        last = before.split("\n\n")[-1]
        assert after.startswith(last), "the last paragraph (≤ overlap) starts the next chunk"


def test_long_paragraphs_split_at_sentences_then_words():
    sentence = "This sentence is about the supervisor and its restarts."
    paragraph = " ".join([sentence] * 10)
    chunks = split_text(paragraph, 120, 0)
    assert all(len(c) <= 120 for c in chunks)
    assert all(c.startswith("This sentence") and c.endswith("restarts.") for c in chunks)
    words = split_text("word " * 100, 50, 10)
    assert all(len(c) <= 50 and not c.startswith("ord") for c in words)


def test_list_numbers_stay_with_their_items():
    text = "Steps:\n1. Start the platform with mlplane up.\n2. Ingest documents with mlplane ingest.\n" * 5
    chunks = split_text(text, 100, 0)
    assert not any(c.strip() in ("1.", "2.") for c in chunks)
    assert all(len(c) <= 100 for c in chunks)


@pytest.mark.parametrize(("size", "overlap", "message"), [
    (16, 0, "chunk size must be at least 32"),
    (100, 100, "less than the chunk size (100), got 100"),
    (100, -1, "got -1"),
])
def test_bad_sizes_are_refused(size, overlap, message):
    with pytest.raises(ChunkingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        split_text(TEXT, size, overlap)


def test_chunk_ids_are_stable_and_an_edit_changes_only_its_chunks():
    first = chunk_document("a.md", TEXT, 200, 0)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in chunk_document("a.md", TEXT, 200, 0)]
    assert len({c.chunk_id for c in first}) == len(first)
    assert not {c.chunk_id for c in first} & {c.chunk_id for c in chunk_document("b.md", TEXT, 200, 0)}

    edited = TEXT.replace("topic 11", "topic eleven")
    second = chunk_document("a.md", edited, 200, 0)
    changed = {c.chunk_id for c in second} - {c.chunk_id for c in first}
    assert len(changed) == 1 and "topic eleven" in next(c.text for c in second if c.chunk_id in changed)
    repeated = chunk_document("a.md", "Same text here, twice over.\n\n" * 8, 32, 0)
    assert len({c.chunk_id for c in repeated}) == len(repeated), "identical chunks get distinct ids"


def test_plan_skips_unchanged_documents_and_removes_deleted_ones():
    settings = IngestSettings(200, 0, "embedder-v1")
    a, b = Document("a.md", "A", TEXT), Document("b.md", "B", TEXT)
    new = plan([a, b], {}, settings)
    assert [p.status for p in new] == ["new", "new"] and all(p.write for p in new)
    stored = {p.source: ({p.fingerprint}, {c.chunk_id for c in p.write}) for p in new}
    again = plan([a, b], stored, settings)
    assert [p.status for p in again] == ["unchanged", "unchanged"] and not any(p.write or p.delete for p in again)

    changed = plan([Document("a.md", "A", TEXT + "\n\nOne more paragraph here.")], stored, settings)
    assert [p.status for p in changed] == ["changed", "deleted"]
    new_ids = {c.chunk_id for c in chunk_document("a.md\x00embedder-v1", TEXT + "\n\nOne more paragraph here.", 200, 0)}
    assert set(changed[0].keep) == new_ids & stored["a.md"][1] and len(changed[0].keep) >= 4, "untouched chunks stay"
    assert set(changed[0].delete) == stored["a.md"][1] - new_ids
    assert {c.chunk_id for c in changed[0].write} == new_ids - stored["a.md"][1]
    assert set(changed[1].delete) == stored["b.md"][1]

    other_embedder = plan([a], {"a.md": stored["a.md"]}, IngestSettings(200, 0, "embedder-v2"))[0]
    assert other_embedder.status == "changed" and not other_embedder.keep, "a new embedder re-embeds everything"


def test_loader_reads_markdown_text_and_html_without_scripts(tmp_path):
    docs = {d.source: d for d in load_corpus(CORPUS)}
    assert {"triton.html", "evaluation.txt", "cli.md"} <= set(docs)
    html = docs["triton.html"]
    assert html.title == "The Triton runtime"
    assert "config.pbtxt" in html.text and "console.log" not in html.text and "font-family" not in html.text
    assert docs["evaluation.txt"].title == "Evaluating retrieval and answers"
    assert docs["cli.md"].title == "The mlplane command line"

    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.md").write_text("# hidden")
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(CorpusError, match="no documents to ingest"):
        load_corpus(tmp_path)
    with pytest.raises(CorpusError, match="unsupported file type '.png'"):
        load_corpus(tmp_path / "image.png")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CorpusError, match="cannot read as UTF-8"):
        load_corpus(tmp_path)


def test_extractive_answer_picks_matching_sentences_and_cites_them():
    hits = [
        Hit("1", "The supervisor restarts crashed components. The delay doubles up to 30 seconds.", "a.md", 0.9),
        Hit("2", "Promotion moves the alias. In-flight requests finish on the old version.", "b.md", 0.8),
    ]
    answer = extractive_answer("What happens to in-flight requests during promotion?", hits, max_sentences=1)
    assert answer == "In-flight requests finish on the old version. [2]"
    both = extractive_answer("How long is the restart delay of crashed components?", hits, max_sentences=2)
    assert citations(both)[0] == 1 and "30 seconds" in both
    assert extractive_answer("Kubernetes quotas?", hits) == NO_ANSWER
    assert extractive_answer("anything at all", []) == NO_ANSWER
