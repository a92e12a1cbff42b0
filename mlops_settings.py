"""The models of this repo, for akerbp.mlops (`mlops settings validate` checks this file).

The template model: bulk density (RHOB) from gamma ray, neutron porosity and depth. Replace it with your own.
"""
from akerbp.mlops import ModelSettings

models = [
    ModelSettings(
        model_name="well_density",
        human_friendly_model_name="Well density (RHOB) template model",
        model_file="model_code/model.py",
        req_file="model_code/requirements.model",
        test_file="model_code/test_model.py",
        artifact_folder="model_artifact",
        info={
            "prediction": {
                "description": "Predicts bulk density (RHOB, g/cm3) from GR, NPHI and DEPTH",
                "owner": "data-science@example.com",
            },
            "training": {
                "description": "Trains the RHOB ridge regression and uploads it as a new model version",
                "owner": "data-science@example.com",
            },
        },
        python_version="py311",
        # Training in prod uploads a new version only when it meets this (ServiceTest.training_check's bar).
        deployment_condition={"metric": "r2", "direction": "above", "threshold": 0.7},
    ),
]
