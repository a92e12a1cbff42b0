"""The prediction and training services that run inside a deployed CDF Function.

Everything here runs from the function folder with only the bundled akerbp.mlops runtime (this package, utils/,
errors.py, registry/, audit.py) and the model's requirements: never import cli/, deployment/ or settings.py.
The folder contract (handler.py, mlops_service_settings.json, model code, artifact/) is described in runtime.py.
"""
