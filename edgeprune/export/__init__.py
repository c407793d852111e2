"""Export stage: PyTorch -> ONNX -> (TFLite), quantization, and the artifact record."""
