"""The torch side of vtn-edge: VTN models, checkpoints, training, and export to OpenVINO IR."""

__version__ = "0.1.0"
