"""Model-independent pieces of the evaluation harness: benchmark loaders, needle-in-a-haystack
generation, answer metrics and a BM25 retrieval baseline."""

from ..retrieval import build_rag_context, chunk_document, retrieve
from .datasets import (
    TASKS,
    Example,
    TaskSpec,
    cut_document,
    cut_documents,
    get_task,
    load_longbench,
    load_loogle,
)
from .metrics import METRICS, get_metric, score
from .niah import load_haystack, load_niah_defaults, make_niah, make_ruler_niah

__all__ = [
    "METRICS",
    "TASKS",
    "Example",
    "TaskSpec",
    "build_rag_context",
    "chunk_document",
    "cut_document",
    "cut_documents",
    "get_metric",
    "get_task",
    "load_haystack",
    "load_longbench",
    "load_loogle",
    "load_niah_defaults",
    "make_niah",
    "make_ruler_niah",
    "retrieve",
    "score",
]
