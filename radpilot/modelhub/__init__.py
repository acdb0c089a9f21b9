"""Models: manifests, sha256-verified ONNX Runtime sessions, and which versions are activated.

A bottom layer: analyses load their models through :mod:`radpilot.modelhub.registry`
(standard library only until a session is made, so training scripts can import the
analyses' pre-processing cheaply), the engine checks activation through
:mod:`radpilot.modelhub.activation`, and the validation workbench's gate writes
activations into it.
"""
