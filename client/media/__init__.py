"""Media I/O on PyAV: probing and reading an input (``_probe``, ``_input``), how the masked
video is encoded (``_encoder``, ``_x264``), the muxer every output is (``_muxer``) with the
file output (``_output``: written atomically, checked against the input) and the live sink
(``_sink``) as thin subclasses, stream digests (``_digest``), output paths (``_atomic``) and
frame-exact random access for review (``_frames``).
"""

from ._atomic import (
    check_paths,
    check_writable,
    partial_path,
    replacing,
    same_file,
    write_atomic,
)
from ._digest import packet_digests, sha256_file
from ._encoder import EncoderSettings, LiveEncoder
from ._frames import Frames
from ._input import DecodedFrame, Input
from ._output import Output
from ._probe import Picture, VideoInfo, probe, sample_aspect
from ._sink import LiveSink, ProtocolError, SinkEndpoint

__all__ = [
    "DecodedFrame",
    "EncoderSettings",
    "Frames",
    "Input",
    "LiveEncoder",
    "LiveSink",
    "Output",
    "Picture",
    "ProtocolError",
    "SinkEndpoint",
    "VideoInfo",
    "check_paths",
    "check_writable",
    "packet_digests",
    "partial_path",
    "probe",
    "replacing",
    "same_file",
    "sample_aspect",
    "sha256_file",
    "write_atomic",
]
