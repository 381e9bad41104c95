"""VTN in torch: per-frame CNN encoders, the self-attention decoder and their composition."""
