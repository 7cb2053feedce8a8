"""Using a finished run: predictions and evaluation on new data, export."""
