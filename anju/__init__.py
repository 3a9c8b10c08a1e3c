"""Anju: a smart-community IoT platform (edge gateway agent and cloud tier)."""
