"""Evaluation: answer a split and report EM, F1, cover-EM, recalls, hops, latency and PRM AUROC."""
