"""An extractive retrieval-augmented generator over bundled maintenance notes.

* **Corpus**: the markdown notes in ``corpus/`` next to this module. A note is
  ``# Title``, ``key: value`` metadata lines (``equipment``, ``fault``,
  ``sensors``) and ``## Symptoms`` / ``## Causes`` / ``## Actions`` sections.
* **Retrieval**: Okapi BM25 (``k1 = 1.2``, ``b = 0.75``) over a dense numpy
  term matrix built at construction. Terms are lowercase alphanumeric words
  without stop words and with a plural ``s`` removed; an identifier such as
  ``suction_pressure`` is the term ``suction_pressure`` plus the words
  ``suction`` and ``pressure``. Identifiers only occur in the notes' metadata,
  so they match the exact equipment type and sensors. The title and the
  metadata count twice, so a note about the asked-for equipment and sensors
  ranks first. The query for a GNN verdict (:func:`query_for`) names the
  equipment type, the strongest sensors (for an anomalous verdict) and the
  verdict, and asks about sensor drift when the confidence is low; the
  sensors weigh by rank (with three: 3, 2, 1).
* **Generation**: deterministic and extractive. A template states the GNN's
  verdict, names the best note, and copies its symptom and cause sentences
  that share most terms with the query, its first actions, and the titles of
  the other retrieved notes.
* **Tokens** (:func:`count_tokens`): regex word pieces, roughly what a BPE
  tokenizer counts: every run of letters is ``ceil(len / 6)`` tokens, every run
  of digits ``ceil(len / 3)``, every other non-space character one token.
  ``input_tokens`` counts the prompt an LLM would get (the query plus the
  retrieved notes' full text); ``output_tokens`` counts the answer.

Error model: with ``error_probability > 0`` (default 0), :meth:`RAGPipeline.generate`
raises :class:`RAGError` for that fraction of queries, decided by a hash of
the query (the same query always fails or always succeeds).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from importlib import resources
from importlib.resources.abc import Traversable
from types import MappingProxyType
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

from mlops_otel import semconv
from mlops_otel.telemetry import Telemetry

from .gnn import GNNResult

__all__ = [
    "CORPUS_ID",
    "RAG_PROVIDER",
    "RAG_MODEL_VERSION",
    "Note",
    "RAGError",
    "RAGPipeline",
    "RAGResult",
    "Retrieved",
    "count_tokens",
    "default_corpus",
    "load_corpus",
    "parse_note",
    "query_for",
]

FloatArray = npt.NDArray[np.float64]

#: The model version label of this generator (for ``rag_*`` metrics).
RAG_MODEL_VERSION: Final = "rag-extractive-1.0"
#: ``gen_ai.provider.name`` of this in-process generator (a custom value: no LLM vendor).
RAG_PROVIDER: Final = "mlops_otel.extractive"
#: ``gen_ai.data_source.id`` of the bundled maintenance notes.
CORPUS_ID: Final = "maintenance-notes"

_K1: Final = 1.2
_B: Final = 0.75
_TITLE_WEIGHT: Final = 2
_META_WEIGHT: Final = 2
_LOW_CONFIDENCE: Final = 0.6
_SECTIONS: Final = ("symptoms", "causes", "actions")
_STOP_WORDS: Final = frozenset(
    (
        "a", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been", "before", "both",
        "but", "by", "can", "do", "does", "each", "for", "from", "has", "have", "how", "if", "in", "into",
        "is", "it", "its", "more", "most", "no", "not", "of", "on", "only", "or", "other", "over", "same",
        "so", "such", "than", "that", "the", "their", "then", "there", "these", "this", "those", "to",
        "too", "under", "up", "very", "was", "what", "when", "where", "which", "while", "with", "without",
    )
)
_WORD: Final = re.compile(r"[a-z0-9]+(?:_[a-z0-9]+)*")
_PIECES: Final = re.compile(r"[A-Za-z]+|[0-9]+|[^\sA-Za-z0-9]")
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+")


def count_tokens(text: str) -> int:
    """Count regex word-piece tokens (see the module docstring)."""
    total = 0
    for piece in _PIECES.findall(text):
        if piece[0].isalpha():
            total += math.ceil(len(piece) / 6)
        elif piece[0].isdigit():
            total += math.ceil(len(piece) / 3)
        else:
            total += 1
    return total


def _terms(text: str) -> list[str]:
    """Retrieval terms (see the module docstring)."""
    out = []
    for identifier in _WORD.findall(text.lower()):
        words = identifier.split("_")
        if len(words) > 1:
            out.append(identifier)
        for word in words:
            if word in _STOP_WORDS:
                continue
            if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
                word = word[:-1]
            out.append(word)
    return out


class RAGError(Exception):
    """The generator failed (a simulated transient error)."""

    def __init__(self, message: str, *, model_version: str) -> None:
        super().__init__(message)
        self.model_version = model_version


@attrs.frozen
class Note:
    """One maintenance note of the corpus."""

    id: str
    title: str
    metadata: Mapping[str, str]
    sections: Mapping[str, tuple[str, ...]]  # lowercase section name -> sentences
    text: str  # the note as written

    @property
    def equipment(self) -> str:
        """The equipment type the note is about (``"any"`` for general notes)."""
        return self.metadata.get("equipment", "any")


@attrs.frozen
class Retrieved:
    """A note and its BM25 score for a query."""

    note: Note
    score: float


@attrs.frozen
class RAGResult:
    """A generated answer and what it cost."""

    answer: str
    sources: tuple[str, ...]  # note ids, best first
    input_tokens: int
    output_tokens: int
    generation_time_ms: float
    model_version: str = RAG_MODEL_VERSION

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


def parse_note(note_id: str, text: str) -> Note:
    """Parse one note; raises ``ValueError`` naming the note when it is malformed."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise ValueError(f"note {note_id!r} must start with a '# Title' line, got {lines[:1]!r}")
    title = lines[0][2:].strip()
    metadata: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in lines[1:]:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip().lower(), [])
        elif current is None:
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"note {note_id!r}: metadata lines must be 'key: value', got {line!r}")
            metadata[key.strip().lower()] = value.strip()
        elif line.startswith("- "):
            current.append(line[2:].strip())
        else:
            current.extend(s.strip() for s in _SENTENCE_END.split(line) if s.strip())
    missing = [s for s in _SECTIONS if not sections.get(s)]
    if missing:
        raise ValueError(f"note {note_id!r} must have non-empty sections {_SECTIONS}, missing {missing}")
    return Note(
        id=note_id,
        title=title,
        metadata=MappingProxyType(metadata),
        sections=MappingProxyType({k: tuple(v) for k, v in sections.items()}),
        text=text.strip(),
    )


def default_corpus() -> Traversable:
    """The directory of the bundled notes (inside this package)."""
    return resources.files(__name__.rpartition(".")[0]).joinpath("corpus")


def load_corpus(directory: Traversable | None = None) -> tuple[Note, ...]:
    """Load every ``*.md`` note of *directory* (default: the bundled corpus), sorted by id."""
    root = default_corpus() if directory is None else directory
    files = sorted((f for f in root.iterdir() if f.name.endswith(".md")), key=lambda f: f.name)
    if not files:
        raise ValueError(f"corpus directory must contain *.md notes, got none in {root}")
    return tuple(parse_note(f.name.removesuffix(".md"), f.read_text(encoding="utf-8")) for f in files)


def _words(name: str) -> str:
    return name.replace("_", " ")


def query_for(result: GNNResult) -> str:
    """The retrieval query for a GNN verdict (see the module docstring).

    An anomalous verdict (score >= 0.5) names its strongest sensors; a normal
    one asks for routine advice. A confidence below 0.6 adds sensor drift.
    """
    parts = [result.equipment_type]
    if result.anomaly_score >= 0.5:
        parts.append(f"fault on {', '.join(result.top_nodes)}")
    else:
        parts.append("healthy, routine baseline")
    if result.confidence < _LOW_CONFIDENCE:
        parts.append("low confidence: sensor drift or calibration")
    return "; ".join(parts)


def _document_terms(note: Note) -> list[str]:
    meta = " ".join(note.metadata.values())
    body = " ".join(s for section in note.sections.values() for s in section)
    return _terms(note.title) * _TITLE_WEIGHT + _terms(meta) * _META_WEIGHT + _terms(body)


def _check_top_k(_: object, __: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"top_k must be an int >= 1, got {value!r}")


def _check_probability(_: object, __: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise ValueError(f"error_probability must be between 0 and 1, got {value!r}")


@attrs.define
class RAGPipeline:
    """Retrieve maintenance notes for a GNN verdict and compose an answer (see the module docstring)."""

    notes: tuple[Note, ...] = attrs.field(factory=load_corpus)
    top_k: int = attrs.field(default=3, validator=_check_top_k)
    error_probability: float = attrs.field(default=0.0, validator=_check_probability)
    model_version: str = attrs.field(default=RAG_MODEL_VERSION, init=False)
    _vocabulary: dict[str, int] = attrs.field(init=False, factory=dict, repr=False)
    _weights: FloatArray = attrs.field(init=False, repr=False)  # (notes, terms) BM25 term weights

    def __attrs_post_init__(self) -> None:
        if not self.notes:
            raise ValueError("notes must not be empty, got ()")
        docs = [_document_terms(n) for n in self.notes]
        for terms in docs:
            for term in terms:
                self._vocabulary.setdefault(term, len(self._vocabulary))
        tf = np.zeros((len(docs), len(self._vocabulary)))
        for d, terms in enumerate(docs):
            np.add.at(tf[d], [self._vocabulary[t] for t in terms], 1.0)
        df = (tf > 0).sum(axis=0)
        idf = np.log(1.0 + (len(docs) - df + 0.5) / (df + 0.5))
        length = tf.sum(axis=1, keepdims=True)
        norm = _K1 * (1.0 - _B + _B * length / length.mean())
        self._weights = idf * tf * (_K1 + 1.0) / (tf + norm)

    def retrieve(self, query: str, k: int | None = None) -> tuple[Retrieved, ...]:
        """The *k* (default ``top_k``) best notes for *query*, best first; ties keep corpus order."""
        weights: dict[str, float] = {}
        for term in _terms(query):
            weights[term] = weights.get(term, 0.0) + 1.0
        return self._search(weights, k)

    def retrieve_for(self, result: GNNResult, k: int | None = None) -> tuple[Retrieved, ...]:
        """The best notes for a GNN verdict: :func:`query_for` with its sensors weighted by rank."""
        weights: dict[str, float] = {}
        for term in _terms(query_for(result)):
            weights[term] = weights.get(term, 0.0) + 1.0
        ranked = result.top_nodes if result.anomaly_score >= 0.5 else ()
        for rank, sensor in enumerate(ranked):
            if sensor in weights:
                weights[sensor] += len(ranked) - rank - 1.0
        return self._search(weights, k)

    def _search(self, weights: Mapping[str, float], k: int | None) -> tuple[Retrieved, ...]:
        k = self.top_k if k is None else k
        q = np.zeros(len(self._vocabulary))
        for term, weight in weights.items():
            index = self._vocabulary.get(term)
            if index is not None:
                q[index] = weight
        scores = self._weights @ q
        order = np.argsort(-scores, kind="stable")[:k]
        return tuple(Retrieved(self.notes[i], float(scores[i])) for i in order)

    def generate(self, result: GNNResult, telemetry: Telemetry | None = None) -> RAGResult:
        """Compose a maintenance answer for a GNN verdict.

        With *telemetry*, the lookup is traced as a GenAI ``retrieval maintenance-notes``
        span and the generation as ``text_completion rag-extractive-1.0`` (kind INTERNAL:
        the model runs in process) with its token usage, as the OTel GenAI conventions say.
        """
        start = time.perf_counter()
        query = query_for(result)
        retrieval = nullcontext() if telemetry is None else telemetry.gen_ai_retrieval(CORPUS_ID)
        with retrieval:
            hits = self.retrieve_for(result)
        operation = nullcontext() if telemetry is None else telemetry.gen_ai_operation(
            self.model_version, provider=RAG_PROVIDER, operation=semconv.GEN_AI_OPERATION_TEXT_COMPLETION,
        )
        with operation as op:
            self._maybe_fail(query)
            answer = _compose(result, query, hits)
            prompt = "\n\n".join([query, *(h.note.text for h in hits)])
            input_tokens, output_tokens = count_tokens(prompt), count_tokens(answer)
            if op is not None:
                op.record_usage(input_tokens, output_tokens)
        return RAGResult(
            answer=answer,
            sources=tuple(h.note.id for h in hits),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            generation_time_ms=(time.perf_counter() - start) * 1000.0,
            model_version=self.model_version,
        )

    def _maybe_fail(self, query: str) -> None:
        if self.error_probability <= 0.0:
            return
        digest = hashlib.blake2b(query.encode(), digest_size=8, key=self.model_version.encode()).digest()
        if int.from_bytes(digest, "big") / 2.0**64 < self.error_probability:
            raise RAGError(
                f"{self.model_version} failed to generate an answer (simulated transient error)",
                model_version=self.model_version,
            )


def _best(sentences: Sequence[str], query_terms: set[str], count: int) -> list[str]:
    """The *count* sentences sharing most terms with the query, in their original order."""
    overlap = [len(query_terms.intersection(_terms(s))) for s in sentences]
    ranked = sorted(range(len(sentences)), key=lambda i: (-overlap[i], i))[:count]
    return [sentences[i] for i in sorted(ranked)]


def _numbered(items: Iterable[str]) -> list[str]:
    return [f"{i}. {item}" for i, item in enumerate(items, start=1)]


def _compose(result: GNNResult, query: str, hits: Sequence[Retrieved]) -> str:
    score = result.anomaly_score
    status = "anomalous" if score >= 0.5 else "normal"
    lines = [
        f"Equipment {result.equipment_id} ({_words(result.equipment_type)}), GNN {result.model_version}: "
        f"{status}, anomaly score {score:.2f}, confidence {result.confidence:.2f}. "
        f"Strongest signals: {', '.join(_words(n) for n in result.top_nodes)}.",
    ]
    if hits:
        top = hits[0].note
        terms = set(_terms(query))
        lines.append(f"Most relevant note: {top.title} [{top.id}].")
        lines.append("Symptoms: " + " ".join(_best(top.sections["symptoms"], terms, 1)))
        lines.append("Probable cause: " + " ".join(_best(top.sections["causes"], terms, 1)))
        lines.append("Recommended actions:")
        lines.extend(_numbered(top.sections["actions"][:3]))
        if len(hits) > 1:
            lines.append("See also: " + "; ".join(f"{h.note.title} [{h.note.id}]" for h in hits[1:]) + ".")
    return "\n".join(lines)
