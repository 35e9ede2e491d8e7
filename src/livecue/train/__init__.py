"""Training: the LIVE fine-tuning recipe on accelerate (single device to multi-node), resumable."""
