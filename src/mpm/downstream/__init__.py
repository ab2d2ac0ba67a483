"""The downstream test bed (paper section 5.2): heads on a backbone, fine-tuning and metrics."""
