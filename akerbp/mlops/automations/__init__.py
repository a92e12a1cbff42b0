"""Automations: scheduled retraining that trains, gates on metrics, redeploys and notifies, run by CDF Data Workflows."""
