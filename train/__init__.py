"""Fine-tuning the encoder, fitting the ranker, and measuring recommendation quality."""
