"""Toy models with a known answer: superposition (Elhage et al. 2022)."""
