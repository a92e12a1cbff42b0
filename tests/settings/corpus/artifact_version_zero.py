# expect: model 'churn' | field 'artifact_version' | greater than or equal to 1 | line 4
models = [
    {"model_name": "churn", "model_file": "model_code/model.py",
     "artifact_version": 0},
]
