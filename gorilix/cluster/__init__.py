"""Clustering: the SWIM membership engine, its UDP driver and the cluster provider."""
