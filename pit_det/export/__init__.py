"""Export of whole detectors: ONNX with an onnxruntime check (:mod:`.onnx`)."""
