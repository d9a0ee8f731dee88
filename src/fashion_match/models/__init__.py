"""Model registry (torch). Not imported by the runtime."""

from fashion_match.models.embedding import EmbeddingModel, create_model, list_models

__all__ = ["EmbeddingModel", "create_model", "list_models"]
