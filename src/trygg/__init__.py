"""trygg: welfare-technology sensor event pipeline."""
