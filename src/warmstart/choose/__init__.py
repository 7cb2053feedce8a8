"""Choosing between ways to fine-tune: strategies side by side (`compare`), locally or on Ray."""
