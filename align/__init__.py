"""lmforge.align."""
