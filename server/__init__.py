"""veil's detection service, in two layers.

- :mod:`veil.server.engine`: the face models' pre/post-processing, the inference backends
  (onnxruntime in process, Triton), fusion of several detectors and the weights. No gRPC:
  the on-prem client detects in process through it.
- :mod:`veil.server.service`: the gRPC servicer, cloud jobs, the batcher, auth, metrics and
  ``serve``, on top of the engine.
"""
