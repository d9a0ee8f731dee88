"""Converters named for what they take and give: torch2onnx (more in later releases)."""
