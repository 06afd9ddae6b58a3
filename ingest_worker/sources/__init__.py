"""Read a job's data source into documents. Only the module for the job's type is imported,
so a `text` job never loads file, HTML or network code."""

from __future__ import annotations

from ingest_worker.documents import Document, Loaded
from ingest_worker.errors import BadInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ingest_worker.config import WorkerConfig
    from ingest_worker.job import Job
    from ingest_worker.progress import Reporter


def load_source(job: Job, config: WorkerConfig, reporter: Reporter) -> Loaded:
    kind = job.source_type
    if kind == "text":
        return _load_text(job)
    if kind == "file":
        from ingest_worker.sources.files import load_files

        return load_files(job.source, config, reporter, job.tenant_id)
    if kind == "url":
        from ingest_worker.web.pages import load_url

        return load_url(job.source, config, reporter)
    from ingest_worker.web.crawl import load_crawl

    return load_crawl(job.source, config, reporter)


def _load_text(job: Job) -> Loaded:
    text = job.source.get("text")
    if not isinstance(text, str):
        raise BadInput("data_source.text: is required for a text source and must be a string")
    loaded = Loaded()
    loaded.bytes_read = len(text.encode("utf-8", "surrogatepass"))
    title = job.source.get("title")
    source = title if isinstance(title, str) and title else f"text:{job.job_id}"
    loaded.documents.append(Document(source, text))
    return loaded
