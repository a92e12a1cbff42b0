"""The prediction and training services that run inside a deployed CDF Function, and nothing else.

Everything here runs from the function folder with only the bundled akerbp.mlops runtime (this package, utils/,
errors.py, the registry, audit.py, vocabulary.py, function_folder.py) and the model's requirements: never import
cli/, deployment/ or settings.py. Deploy-time code (calling a built handler locally: deployment/local_call.py) lives
in deployment/. The folder's layout (handler.py, mlops_service_settings.json, model code, artifact/) is
function_folder.py's.
"""
