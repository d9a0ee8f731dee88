"""Converters named for what they take and give: torch2onnx, onnx2fp16, onnx2int8, onnx2engine; the gate; triton."""
