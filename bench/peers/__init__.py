"""Reference (peer) implementations measured next to ours. Written by hand: torchvision is not installable here."""
