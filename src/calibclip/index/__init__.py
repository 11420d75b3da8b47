"""On-disk image index: embedding store (npy + SQLite), incremental build, FAISS search."""

from calibclip.index.embed import IndexSummary
from calibclip.index.index import Hit, Index, default_index_path
from calibclip.index.store import EmbeddingStore

__all__ = ["EmbeddingStore", "Hit", "Index", "IndexSummary", "default_index_path"]
