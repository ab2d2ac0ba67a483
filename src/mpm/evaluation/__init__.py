"""Evaluations of pre-trained models beyond their losses: reconstructions and generation."""
