"""Business logic behind the controllers: job submission and live models."""
