"""The diagnosis service example: an equipment GNN and an extractive RAG over maintenance notes.

Everything is numpy and the standard library: no network, no downloaded
weights. See README.md next to this file.
"""

from .equipment import EquipmentFleet, SensorReadings, UnknownEquipmentError
from .gnn import GNN_VERSIONS, EquipmentGNN, GNNResult, ModelError
from .rag import RAG_MODEL_VERSION, RAGError, RAGPipeline, RAGResult

__all__ = [
    "GNN_VERSIONS",
    "RAG_MODEL_VERSION",
    "EquipmentFleet",
    "EquipmentGNN",
    "GNNResult",
    "ModelError",
    "RAGError",
    "RAGPipeline",
    "RAGResult",
    "SensorReadings",
    "UnknownEquipmentError",
]
