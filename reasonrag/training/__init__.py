"""Training: Monte Carlo step labels, the PRM trainer, the policy trainers (PG, DPO, online), the reader."""
