"""Retrieval-augmented generation: embedding, the vector store, ingestion, evaluation and answering."""
