"""The shipped weights (ONNX files); installed as the package ``stableface.weights_data``."""
