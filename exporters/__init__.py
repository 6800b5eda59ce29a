"""Exporters: ONNX export with parity checks (`onnx`), ONNX Runtime fusion, int8 and sessions
(`ort`). Installed as `compresskit.exporters`."""
