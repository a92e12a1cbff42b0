# expect: model #2 | field 'model_name' | is required | line 4
models = [
    {"model_name": "churn", "model_file": "model_code/model.py"},
    {"model_file": "model_code/model.py"},
]
