"""MPMv2: masked particle modelling for jets (Leigh et al., 2024)."""

__version__ = "0.1.0"
