"""Template model: predicts bulk density (RHOB) from gamma ray, neutron porosity and depth.

It exists to show the model interface akerbp.mlops deploys (model.py, test_model.py, requirements.model) on a
small but real model; replace it with your own.
"""
