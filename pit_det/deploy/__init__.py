"""Deployment: a detector exported as one graph, the file's record of its origin, and the runtimes that run it.

- :mod:`.onnx`: the whole detector as an ONNX graph for any image size, checked against mmdet's ``predict``.
- :mod:`.openvino`: the graph as an OpenVINO IR, in float or NNCF's INT8.
- :mod:`.metadata`: what a file records (config, checkpoint, weights digest, classes, format, its ``.bin``'s digest),
  read back and checked against a detector or a config.
- :mod:`.runtimes`: onnxruntime and OpenVINO sessions, and the detector's inference paths through them (registered
  here, when pit_det is imported).
- :mod:`.extras`: the one guard of the optional packages (``pip install "pit-det[export]"``).
"""

from . import runtimes  # noqa: F401  (registers the onnxruntime and OpenVINO inference paths)
