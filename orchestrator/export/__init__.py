"""Export a logged model (ONNX or pt2) and check it computes what the trained model computes."""
