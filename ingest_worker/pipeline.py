"""One job end to end: load, extract, chunk, embed, store, with progress through each stage."""

from __future__ import annotations

from ingest_worker.chunking import chunk_text, normalise, storable
from ingest_worker.embedding import make_embedder
from ingest_worker.errors import BadInput
from ingest_worker.job import map_strings
from ingest_worker.sources import load_source
from ingest_worker.stages import FETCH_END
from ingest_worker.stores import open_store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ingest_worker.config import WorkerConfig
    from ingest_worker.job import Job
    from ingest_worker.progress import Reporter

_MAX_SKIPPED_LISTED = 50


def run_job(job: Job, config: WorkerConfig, reporter: Reporter) -> dict[str, Any]:
    reporter.progress(1, f"reading {job.source_type} source")
    loaded = load_source(job, config, reporter)
    docs = loaded.documents
    reporter.progress(FETCH_END, f"read {len(docs)} document(s), {loaded.bytes_read} bytes")

    texts = [normalise(d.text) for d in docs]
    reporter.progress(45, "extracted text")

    chunks: list[dict[str, Any]] = []
    base_meta = map_strings(job.metadata, storable)
    for doc, text in zip(docs, texts, strict=True):
        # A page's URL or title can quote a secret of the job (a token in a query).
        doc_meta = map_strings(doc.meta, lambda s: storable(job.scrub(s)))
        source = storable(job.scrub(doc.source))
        for piece in chunk_text(text, config.chunk_size, config.chunk_overlap):
            meta = {**base_meta, **doc_meta, "source_type": job.source_type}
            chunks.append(
                {
                    "chunk_index": len(chunks),
                    "source": source,
                    "content": piece,
                    "metadata": meta,
                }
            )
    if not chunks:
        reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in loaded.skipped[:5])
        raise BadInput("no text to ingest" + (f" ({reasons})" if reasons else ""))
    reporter.progress(50, f"split into {len(chunks)} chunk(s)")

    embedder = make_embedder(config, reporter.note)
    adjusted: list[dict[str, Any]] = []
    if embedder.max_input_tokens is not None:
        from ingest_worker.embedders.inputs import fit_chunks

        assert config.embedding is not None
        chunks, inputs, adjusted = fit_chunks(
            chunks, embedder.max_input_tokens, config.embedding.long_input
        )
    else:
        inputs = [c["content"] for c in chunks]
    for start, end in embedder.batches(inputs):
        vectors = embedder.embed(inputs[start:end])
        for chunk, vector in zip(chunks[start:end], vectors, strict=True):
            chunk["embedding"] = vector
        reporter.stage(50, 85, end, len(chunks), f"embedded {end}/{len(chunks)} chunks")
    embedding = embedder.report()
    if adjusted:
        embedding["adjusted"] = len(adjusted)
        embedding["adjusted_items"] = adjusted[:_MAX_SKIPPED_LISTED]

    store = open_store(config)
    reporter.progress(88, f"storing {len(chunks)} chunk(s) ({store.name})")
    stored = store.replace(job.job_id, job.tenant_id, chunks)
    reporter.progress(99, f"stored {stored} chunk(s)")
    return {
        "job_id": job.job_id,
        "source_type": job.source_type,
        "pages": len(docs),
        "chunks": stored,
        "bytes": loaded.bytes_read,
        "skipped": len(loaded.skipped),
        "skipped_items": loaded.skipped[:_MAX_SKIPPED_LISTED],
        "embedder": embedder.name,
        "embedding": embedding,
        "store": store.name,
    }
