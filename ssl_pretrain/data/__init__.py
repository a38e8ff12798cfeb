"""Data layer: BIDS discovery, validation, preprocessing cache, patch sampling, demo cohort."""
