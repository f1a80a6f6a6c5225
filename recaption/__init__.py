"""Recaptioning with an InternVL teacher on Ray Data."""
