"""Datasets, image decoding and preprocessing. Light: imports neither torch nor onnxruntime."""

from fashion_match.data.images import Batch, ImageSource, decode_image, iter_batches, load_batch, load_image
from fashion_match.data.preprocess import PreprocessSpec
from fashion_match.data.records import Dataset, Record, RetrievalProtocol
from fashion_match.data.spec import load_dataset

__all__ = [
    "Batch",
    "Dataset",
    "ImageSource",
    "PreprocessSpec",
    "Record",
    "RetrievalProtocol",
    "decode_image",
    "iter_batches",
    "load_batch",
    "load_dataset",
    "load_image",
]
